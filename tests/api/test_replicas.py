"""Several replicas on one database behave as one service.

Two ``identity serve --workers 1`` processes, A and B, on their own ports over the same database
(a SQLite file, and PostgreSQL when configured). Only the public gRPC API is used:

- a change made on A stops B from allowing the affected credential within ``BOUND`` seconds, with
  the exact reason, and B never allows it again once it has said no;
- ``WatchKeyEvents`` on one replica streams the changes made on the other;
- per-principal key quotas hold when the racing ``CreateKey`` calls are split across replicas.

Every propagation test warms both replicas first (several allowed answers for the credential), so
a replica that caches what it verified is tested with its cache full.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask

from identity.app.bootstrap import bootstrap
from identity.crypto.hashing import SecretHasher
from identity.store.database import Database
from identity.v1 import (
    authorization_service_pb2,
    authorization_service_pb2_grpc,
    common_pb2,
    key_service_pb2,
    organization_service_pb2,
    principal_service_pb2,
    token_service_pb2,
    token_service_pb2_grpc,
)
from tests.conftest import DATABASE_KINDS, TEST_ARGON2, fresh_database
from tests.helpers import Admin, details_of
from tests.servers import ServeProcess, identity_serve

# How long a change on one replica may take to reach the other. The design's goal is 1 s; the
# bound is generous so a loaded machine does not flake, and tight enough that a cache without
# cross-replica invalidation (or with a TTL of seconds) fails.
BOUND = 2.0
POLL_INTERVAL = 0.015
POLLERS = 3  # concurrent Check loops on B, so some read is in flight whenever the change lands
WARM_CALLS = 5
AFTER_DENIAL_CHECKS = 5  # per poller, every one started after B's first denial

ALLOWED = common_pb2.DECISION_REASON_ALLOWED
SCOPES = ["inventory:read", "billing:read"]
PERMISSION = "billing:read"  # what every propagation case checks (and what narrowing removes)


# Pollers present a credential that just stopped working hundreds of times a second; the
# failed-attempt throttle (tested on its own) would soon answer RATE_LIMITED instead of the reason.
UNTHROTTLED = {"IDENTITY_FAILED_ATTEMPTS_PER_KEY": "1000000", "IDENTITY_FAILED_ATTEMPTS_PER_PEER": "1000000"}


def reason_name(reason: int) -> str:
    """``INVALID_TOKEN`` for ``DECISION_REASON_INVALID_TOKEN``."""
    return common_pb2.DecisionReason.Name(reason).removeprefix("DECISION_REASON_")  # type: ignore[arg-type]


# --- two replicas on one database ---------------------------------------------------------------


@dataclass
class Replica:
    """One server process and stubs that call it (admin stubs as the platform key)."""

    name: str
    serve: ServeProcess
    channel: grpc.Channel
    admin: Admin
    checks: authorization_service_pb2_grpc.AuthorizationServiceStub
    tokens: token_service_pb2_grpc.TokenServiceStub

    def check(self, credential: str, permissions: list[str]) -> authorization_service_pb2.CheckResponse:
        """``Check`` on this replica."""
        return self.checks.Check(
            authorization_service_pb2.CheckRequest(credential=credential, permissions=permissions), timeout=10
        )

    def exchange(self, api_key: str) -> str:
        """A JWT for ``api_key`` minted by this replica."""
        return self.tokens.ExchangeApiKey(
            token_service_pb2.ExchangeApiKeyRequest(api_key=api_key), timeout=10
        ).access_token

    def introspect(self, token: str) -> token_service_pb2.IntrospectTokenResponse:
        """``IntrospectToken`` on this replica."""
        return self.tokens.IntrospectToken(token_service_pb2.IntrospectTokenRequest(token=token), timeout=10)


@dataclass
class Replicas:
    """Replicas A and B on one database of ``kind``, and what the tests measured on them."""

    kind: str
    a: Replica
    b: Replica
    platform_key: str
    measured: list[str] = field(default_factory=list)

    def logs(self) -> str:
        """The end of both servers' logs, for assertion messages."""
        return f"\n{self.a.serve.describe()}\n{self.b.serve.describe()}"

    def record(self, line: str) -> None:
        """Print a measurement (shown with ``-s``) and keep it for the module's summary."""
        line = f"[{self.kind}] {line}"
        print(line)
        self.measured.append(line)


def connect(name: str, serve: ServeProcess, platform_key: str) -> Replica:
    """Stubs on a channel of their own to ``serve``."""
    channel = grpc.insecure_channel(serve.address)
    return Replica(
        name,
        serve,
        channel,
        Admin(channel, platform_key),
        authorization_service_pb2_grpc.AuthorizationServiceStub(channel),
        token_service_pb2_grpc.TokenServiceStub(channel),
    )


@pytest.fixture(scope="module", params=DATABASE_KINDS)
def replicas(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    """Replicas A and B serving one freshly bootstrapped database; both must drain cleanly at the end."""
    kind: str = request.param
    with ExitStack() as stack:
        url = stack.enter_context(fresh_database(kind, tmp_path_factory))
        db = Database(url)
        db.migrate()
        platform_key = bootstrap(db, SecretHasher(TEST_ARGON2)).api_key
        db.dispose()
        logs = tmp_path_factory.mktemp(f"replicas-{kind}")
        serve_a = stack.enter_context(identity_serve(url, logs / "a.log", env=UNTHROTTLED))
        serve_b = stack.enter_context(identity_serve(url, logs / "b.log", env=UNTHROTTLED))
        serve_a.wait_serving()
        serve_b.wait_serving()
        a, b = connect("A", serve_a, platform_key), connect("B", serve_b, platform_key)
        both = Replicas(kind, a, b, platform_key)
        yield both
        print(f"\n[{kind}] summary of measurements:\n  " + "\n  ".join(both.measured))
        a.channel.close()
        b.channel.close()
        codes = (serve_a.terminate(), serve_b.terminate())
        assert codes == (0, 0), f"the replicas did not drain cleanly: exit codes {codes}{both.logs()}"


@pytest.fixture(autouse=True)
def replicas_stay_up(replicas: Replicas) -> Iterator[None]:
    """Each test leaves both replicas running (a crash would otherwise only show in a later test)."""
    yield
    assert replicas.a.serve.running and replicas.b.serve.running, f"a replica exited{replicas.logs()}"


# --- sanity: one database, two processes ----------------------------------------------------------


def test_replicas_are_two_processes_on_one_database(replicas: Replicas) -> None:
    a, b = replicas.a, replicas.b
    assert a.serve.address != b.serve.address and a.serve.process.pid != b.serve.process.pid
    name = f"Shared {uuid.uuid4().hex}"
    org = a.admin.create_org(name, max_keys_per_service_account=5)
    got = b.admin.orgs.GetOrganization(
        organization_service_pb2.GetOrganizationRequest(id=org.id), metadata=b.admin.metadata
    ).organization
    assert (got.id, got.display_name) == (org.id, name)
    account = b.admin.create_principal(org.id)  # written through B, read through A
    assert (
        a.admin.principals.GetPrincipal(
            principal_service_pb2.GetPrincipalRequest(id=account.id), metadata=a.admin.metadata
        ).principal.id
        == account.id
    )
    # A key made on one replica is accepted by the other at once, and so are the tokens each mints.
    for maker, user in ((a, b), (b, a)):
        created = maker.admin.create_key(org.id, account.id, SCOPES)
        for credential in (created.api_key, maker.exchange(created.api_key)):
            reply = user.check(credential, [PERMISSION])
            assert reply.allowed, (maker.name, user.name, reply, replicas.logs())
            assert (reply.key_id, reply.org_id, reply.principal_id) == (created.key.id, org.id, account.id)


# --- propagation of changes from A to B ------------------------------------------------------------


@dataclass
class Tenant:
    """An organization with a service account, its key, and two tokens minted on B; all made fresh per test."""

    replicas: Replicas
    org_id: str
    principal_id: str
    key_id: str
    api_key: str
    token: str
    spare_token: str
    rotated_api_key: str = ""

    @classmethod
    def create(cls, replicas: Replicas) -> Tenant:
        admin = replicas.a.admin
        org_id = admin.create_org(f"Tenant {uuid.uuid4().hex[:8]}", max_keys_per_service_account=5).id
        principal_id = admin.create_principal(org_id).id
        created = admin.create_key(org_id, principal_id, SCOPES)
        b = replicas.b
        return cls(
            replicas,
            org_id,
            principal_id,
            created.key.id,
            created.api_key,
            b.exchange(created.api_key),
            b.exchange(created.api_key),
        )


# Changes, each made through replica A.


def revoke_key(t: Tenant) -> None:
    a = t.replicas.a.admin
    a.keys.RevokeKey(
        key_service_pb2.RevokeKeyRequest(key_id=t.key_id, reason="replica test"), metadata=a.metadata
    )


def deactivate_organization(t: Tenant) -> None:
    t.replicas.a.admin.set_organization_state(t.org_id, organization_service_pb2.ORGANIZATION_STATE_INACTIVE)


def disable_principal(t: Tenant) -> None:
    t.replicas.a.admin.set_principal_state(t.principal_id, principal_service_pb2.PRINCIPAL_STATE_DISABLED)


def rotate_without_grace(t: Tenant) -> None:
    a = t.replicas.a.admin
    reply = a.keys.RotateKey(
        key_service_pb2.RotateKeyRequest(key_id=t.key_id, grace_period=Duration(seconds=0)),
        metadata=a.metadata,
    )
    assert reply.key.id == t.key_id and reply.api_key and reply.api_key != t.api_key
    t.rotated_api_key = reply.api_key


def narrow_scopes(t: Tenant) -> None:
    a = t.replicas.a.admin
    a.keys.UpdateKey(
        key_service_pb2.UpdateKeyRequest(
            key=key_service_pb2.Key(id=t.key_id, scopes=["inventory:read"]),
            update_mask=FieldMask(paths=["scopes"]),
        ),
        metadata=a.metadata,
    )


def delete_key(t: Tenant) -> None:
    a = t.replicas.a.admin
    a.keys.DeleteKey(key_service_pb2.DeleteKeyRequest(key_id=t.key_id), metadata=a.metadata)


def revoke_token(t: Tenant) -> None:
    t.replicas.a.tokens.RevokeToken(token_service_pb2.RevokeTokenRequest(token=t.token), timeout=10)


# Probes: what is asked of a replica, answering a DecisionReason.

Probe = Callable[[Tenant, Replica], int]


def check_key(t: Tenant, replica: Replica) -> int:
    """Check with the API key."""
    return replica.check(t.api_key, [PERMISSION]).reason


def check_token(t: Tenant, replica: Replica) -> int:
    """Check with the token minted on B before the change."""
    return replica.check(t.token, [PERMISSION]).reason


def check_fresh_token(t: Tenant, replica: Replica) -> int:
    """Exchange the key on the replica now, then Check with that new token there."""
    return replica.check(replica.exchange(t.api_key), [PERMISSION]).reason


# What must also hold on B once it denies.


def rotated_key_works_on_b(t: Tenant) -> None:
    b = t.replicas.b
    assert b.check(t.rotated_api_key, [PERMISSION]).allowed
    assert b.check(b.exchange(t.rotated_api_key), [PERMISSION]).allowed


def kept_scope_still_allowed_on_b(t: Tenant) -> None:
    b = t.replicas.b
    assert b.check(t.api_key, ["inventory:read"]).allowed
    assert list(b.check(t.api_key, ["inventory:read"]).granted_scopes) == ["inventory:read"]


def only_that_token_is_revoked_on_b(t: Tenant) -> None:
    b = t.replicas.b
    assert b.check(t.spare_token, [PERMISSION]).allowed and b.introspect(t.spare_token).active
    assert b.check(t.api_key, [PERMISSION]).allowed


@dataclass(frozen=True)
class Case:
    """A change made on A, the credential B is asked about, and the reason B must give."""

    change: Callable[[Tenant], None]
    probe: Probe
    reason: int
    then: Callable[[Tenant], None] | None = None


R = common_pb2
CASES = [
    pytest.param(Case(revoke_key, check_key, R.DECISION_REASON_REVOKED_API_KEY), id="revoke-key"),
    pytest.param(Case(revoke_key, check_token, R.DECISION_REASON_INVALID_TOKEN), id="revoke-token_of_key"),
    pytest.param(
        Case(deactivate_organization, check_key, R.DECISION_REASON_INACTIVE_ORGANIZATION),
        id="org_inactive-key",
    ),
    pytest.param(
        Case(deactivate_organization, check_token, R.DECISION_REASON_INACTIVE_ORGANIZATION),
        id="org_inactive-token",
    ),
    pytest.param(
        Case(disable_principal, check_key, R.DECISION_REASON_DISABLED_PRINCIPAL), id="principal_disabled-key"
    ),
    pytest.param(
        Case(disable_principal, check_token, R.DECISION_REASON_DISABLED_PRINCIPAL),
        id="principal_disabled-token",
    ),
    pytest.param(
        Case(rotate_without_grace, check_key, R.DECISION_REASON_INVALID_API_KEY, rotated_key_works_on_b),
        id="rotate_no_grace-old_key",
    ),
    pytest.param(
        Case(rotate_without_grace, check_token, R.DECISION_REASON_INVALID_TOKEN, rotated_key_works_on_b),
        id="rotate_no_grace-token_of_old_secret",
    ),
    pytest.param(
        Case(narrow_scopes, check_key, R.DECISION_REASON_INSUFFICIENT_SCOPE, kept_scope_still_allowed_on_b),
        id="narrow_scopes-key",
    ),
    # A token's scopes are fixed in its claims when it is minted; what narrowing must change on B is
    # what B mints from now on.
    pytest.param(
        Case(
            narrow_scopes,
            check_fresh_token,
            R.DECISION_REASON_INSUFFICIENT_SCOPE,
            kept_scope_still_allowed_on_b,
        ),
        id="narrow_scopes-token_minted_after",
    ),
    pytest.param(Case(delete_key, check_key, R.DECISION_REASON_INVALID_API_KEY), id="delete-key"),
    pytest.param(Case(delete_key, check_token, R.DECISION_REASON_INVALID_TOKEN), id="delete-token_of_key"),
    pytest.param(
        Case(revoke_token, check_token, R.DECISION_REASON_INVALID_TOKEN, only_that_token_is_revoked_on_b),
        id="revoke_token-token",
    ),
]


@dataclass(frozen=True)
class Observation:
    """One answer from B: when the call started and ended (monotonic seconds) and its reason."""

    start: float
    end: float
    reason: int


class Pollers:
    """Threads that call ``probe`` on B in a loop, every ``POLL_INTERVAL``, recording each answer."""

    def __init__(self, probe: Callable[[], int], count: int = POLLERS) -> None:
        self._probe = probe
        self._stop = threading.Event()
        self.denied = threading.Event()
        self.observed: list[list[Observation]] = [[] for _ in range(count)]
        self.errors: list[BaseException] = []
        self._threads = [
            threading.Thread(target=self._run, args=(i,), name=f"poller-{i}", daemon=True)
            for i in range(count)
        ]

    def _run(self, index: int) -> None:
        mine = self.observed[index]
        time.sleep(index * POLL_INTERVAL / len(self._threads))  # stagger the loops
        while not self._stop.is_set():
            start = time.monotonic()
            try:
                reason = self._probe()
            except BaseException as error:  # surfaced by stop()
                self.errors.append(error)
                self.denied.set()
                return
            mine.append(Observation(start, time.monotonic(), reason))
            if reason != ALLOWED:
                self.denied.set()
            self._stop.wait(POLL_INTERVAL)

    def start(self) -> None:
        """Start polling; return once every poller has an answer."""
        for thread in self._threads:
            thread.start()
        self.wait_until(lambda: all(self.observed) or bool(self.errors), time.monotonic() + 10)

    def wait_until(self, condition: Callable[[], bool], deadline: float) -> bool:
        """Wait (without asserting) until ``condition`` holds or ``deadline`` passes."""
        while not condition():
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL_INTERVAL / 3)
        return True

    def first_denial_end(self) -> float | None:
        """When the earliest-ending denial so far ended."""
        return min(
            (o.end for mine in self.observed for o in list(mine) if o.reason != ALLOWED),
            default=None,
        )

    def wait_for_denial(self, timeout: float) -> None:
        """Wait up to ``timeout`` for a denial, then until every poller has ``AFTER_DENIAL_CHECKS``
        more answers to calls it started after that denial."""
        if not self.denied.wait(timeout):
            return
        first = self.first_denial_end()
        if first is None:  # a poller failed; stop() reports it
            return
        self.wait_until(
            lambda: (
                all(
                    sum(1 for o in list(mine) if o.start > first) >= AFTER_DENIAL_CHECKS
                    for mine in self.observed
                )
                or bool(self.errors)
            ),
            time.monotonic() + 10,
        )

    def stop(self) -> list[Observation]:
        """Stop and join the pollers; every observation, by start time. Raises what a poller raised."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)
        if self.errors:
            raise AssertionError(f"a poller failed: {self.errors[0]!r}") from self.errors[0]
        return sorted((o for mine in self.observed for o in mine), key=lambda o: o.start)


def timeline(observations: list[Observation], origin: float) -> str:
    """B's answers as runs of one reason, each with when it started relative to ``origin``."""
    runs: list[tuple[int, int, float]] = []  # (reason, count, first start)
    for o in observations:
        if runs and runs[-1][0] == o.reason:
            runs[-1] = (o.reason, runs[-1][1] + 1, runs[-1][2])
        else:
            runs.append((o.reason, 1, o.start))
    return "; ".join(
        f"{reason_name(reason)} x{count} from {1000 * (start - origin):+.0f} ms"
        for reason, count, start in runs
    )


@pytest.mark.parametrize("case", CASES)
def test_change_on_a_denies_on_b_within_the_bound(
    replicas: Replicas, case: Case, request: pytest.FixtureRequest
) -> None:
    a, b = replicas.a, replicas.b
    t = Tenant.create(replicas)
    # Warm: both replicas allow the credential, several times (fills whatever they cache).
    for replica in (b, a, b):
        for _ in range(WARM_CALLS):
            got = case.probe(t, replica)
            assert got == ALLOWED, f"{replica.name} did not allow before the change: {reason_name(got)}"
    if case.probe is check_token:
        assert b.introspect(t.token).active and a.introspect(t.token).active

    pollers = Pollers(lambda: case.probe(t, b))
    pollers.start()
    try:
        began = time.monotonic()
        case.change(t)
        returned = time.monotonic()
        pollers.wait_for_denial(BOUND)
    finally:
        observations = pollers.stop()

    story = f"B's answers after A's change returned: {timeline(observations, returned)}"
    denials = [o for o in observations if o.reason != ALLOWED]
    assert denials, (
        f"B still allowed {BOUND} s after A's change returned ({len(observations)} checks)\n{story}{replicas.logs()}"
    )
    first = min(denials, key=lambda o: o.end)
    elapsed = first.end - returned
    replicas.record(
        f"{request.node.callspec.id}: B said {reason_name(first.reason)} {1000 * elapsed:.1f} ms after A's "
        f"{case.change.__name__} returned (A's call took {1000 * (returned - began):.1f} ms; "
        f"{len(observations)} checks on B)"
    )
    assert elapsed <= BOUND, f"B denied only after {elapsed:.3f} s\n{story}{replicas.logs()}"
    assert {o.reason for o in denials} == {case.reason}, (
        f"B must deny with {reason_name(case.reason)} only\n{story}"
    )
    assert not [o for o in observations if o.end < began and o.reason != ALLOWED], (
        f"denied before the change\n{story}"
    )
    # Once B has said no, no call that starts afterwards may say yes (no stale cache refill).
    stale = [o for o in observations if o.start > first.end and o.reason == ALLOWED]
    assert not stale, f"B allowed again {len(stale)} times after denying\n{story}{replicas.logs()}"
    later = [o for o in observations if o.start > first.end]
    assert len(later) >= POLLERS * AFTER_DENIAL_CHECKS, f"too few checks after the denial\n{story}"

    # Both replicas now agree, and whatever else the change implies holds on B.
    assert reason_name(case.probe(t, a)) == reason_name(case.reason)
    assert reason_name(case.probe(t, b)) == reason_name(case.reason)
    if case.probe is check_token:
        assert not b.introspect(t.token).active and not a.introspect(t.token).active
    if case.then is not None:
        case.then(t)


def test_rotation_with_grace_on_a_keeps_the_old_secret_and_its_tokens_working_on_b(
    replicas: Replicas,
) -> None:
    """No over-reaction: during the grace period B keeps allowing the old secret, its tokens and the new one."""
    a, b = replicas.a, replicas.b
    t = Tenant.create(replicas)
    for _ in range(WARM_CALLS):
        assert b.check(t.api_key, [PERMISSION]).allowed and b.check(t.token, [PERMISSION]).allowed
    reply = a.admin.keys.RotateKey(
        key_service_pb2.RotateKeyRequest(key_id=t.key_id, grace_period=Duration(seconds=3600)),
        metadata=a.admin.metadata,
    )
    credentials = {"old key": t.api_key, "token of the old secret": t.token, "new key": reply.api_key}
    # Longer than the time B may take to learn of the rotation, so B answers after it has.
    deadline = time.monotonic() + 0.75 * BOUND
    checks = 0
    while time.monotonic() < deadline:
        for name, credential in credentials.items():
            got = b.check(credential, [PERMISSION]).reason
            assert got == ALLOWED, (
                f"B said {reason_name(got)} for the {name} after {checks} checks{replicas.logs()}"
            )
            checks += 1
        time.sleep(POLL_INTERVAL)
    assert b.check(b.exchange(t.api_key), [PERMISSION]).allowed  # the old secret still exchanges on B


# --- WatchKeyEvents across replicas -----------------------------------------------------------------


def next_event(stream: Any, pool: ThreadPoolExecutor, timeout: float = BOUND) -> key_service_pb2.KeyEvent:
    """The stream's next event, failing (and cancelling the stream) if none comes within ``timeout``."""
    future = pool.submit(next, stream)
    try:
        return future.result(timeout=timeout).event
    except FutureTimeout:
        stream.cancel()
        raise AssertionError(f"no key event within {timeout} s") from None


def test_key_changes_stream_to_watchers_on_the_other_replica(replicas: Replicas) -> None:
    a, b = replicas.a, replicas.b
    org = a.admin.create_org(f"Watched {uuid.uuid4().hex[:8]}", max_keys_per_service_account=5)
    account = a.admin.create_principal(org.id)
    other_org = a.admin.create_org("Not watched")
    other_account = a.admin.create_principal(other_org.id)

    def watch(replica: Replica) -> Any:
        return replica.admin.keys.WatchKeyEvents(
            key_service_pb2.WatchKeyEventsRequest(org_id=org.id, after_cursor=0),
            metadata=replica.admin.metadata,
            timeout=60,
        )

    on_a, on_b = watch(a), watch(b)
    seen: dict[str, list[key_service_pb2.KeyEvent]] = {"A": [], "B": []}
    with ThreadPoolExecutor(max_workers=2) as pool:
        try:

            def arrives(stream: Any, name: str, action: str, returned: float) -> key_service_pb2.KeyEvent:
                event = next_event(stream, pool)
                replicas.record(
                    f"WatchKeyEvents on {name}: {action} arrived {1000 * (time.monotonic() - returned):.0f} ms after it returned"
                )
                seen[name].append(event)
                return event

            # A key created on A reaches the watcher on B (and the one on A).
            first = a.admin.create_key(org.id, account.id, SCOPES).key
            returned = time.monotonic()
            created = arrives(on_b, "B", "CreateKey on A", returned)
            assert (created.type, created.key.id) == (key_service_pb2.KEY_EVENT_TYPE_CREATED, first.id)
            assert created.key.state == key_service_pb2.KEY_STATE_ACTIVE and created.cursor > 0
            arrives(on_a, "A", "CreateKey on A", returned)

            # Both streams are live now: a revoke on A streams to B; another organization's key does not.
            a.admin.create_key(other_org.id, other_account.id, ["a:read"])
            revoke_key_on(a, first.id, "leaked")
            returned = time.monotonic()
            revoked = arrives(on_b, "B", "RevokeKey on A", returned)
            assert (revoked.type, revoked.key.id) == (key_service_pb2.KEY_EVENT_TYPE_REVOKED, first.id)
            assert (
                revoked.key.state == key_service_pb2.KEY_STATE_REVOKED
                and revoked.key.revoke_reason == "leaked"
            )
            arrives(on_a, "A", "RevokeKey on A", returned)

            # And the other way: a key created on B reaches the watcher on A.
            second = b.admin.create_key(org.id, account.id, SCOPES).key
            returned = time.monotonic()
            created_on_b = arrives(on_a, "A", "CreateKey on B", returned)
            assert (created_on_b.type, created_on_b.key.id) == (
                key_service_pb2.KEY_EVENT_TYPE_CREATED,
                second.id,
            )
            arrives(on_b, "B", "CreateKey on B", returned)
        finally:
            on_a.cancel()
            on_b.cancel()
        for stream in (on_a, on_b):
            try:
                next_event(stream, pool)
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.CANCELLED
            else:
                raise AssertionError("a cancelled stream yielded another event")

    # One change log: both replicas streamed the same events with the same cursors, in order.
    def summary(events: list[key_service_pb2.KeyEvent]) -> list[tuple[int, int, str]]:
        return [(e.cursor, e.type, e.key.id) for e in events]

    assert summary(seen["A"]) == summary(seen["B"])
    cursors = [e.cursor for e in seen["B"]]
    assert cursors == sorted(set(cursors))


def revoke_key_on(replica: Replica, key_id: str, reason: str) -> None:
    admin = replica.admin
    admin.keys.RevokeKey(
        key_service_pb2.RevokeKeyRequest(key_id=key_id, reason=reason), metadata=admin.metadata
    )


# --- quotas across replicas ---------------------------------------------------------------------------

ROUNDS = 4
CONCURRENT = 20


@pytest.mark.parametrize(
    ("kind", "quota"),
    [
        pytest.param(principal_service_pb2.PRINCIPAL_KIND_USER, 1, id="user-quota_1"),
        pytest.param(principal_service_pb2.PRINCIPAL_KIND_SERVICE_ACCOUNT, 2, id="service_account-quota_2"),
    ],
)
def test_quota_race_split_across_replicas_creates_exactly_the_quota(
    replicas: Replicas, kind: principal_service_pb2.PrincipalKind.ValueType, quota: int
) -> None:
    a, b = replicas.a, replicas.b
    org = a.admin.create_org("Racers", max_keys_per_user=1, max_keys_per_service_account=2)
    for round_number in range(ROUNDS):
        principal = a.admin.create_principal(org.id, kind, f"racer {round_number}")
        request = key_service_pb2.CreateKeyRequest(
            org_id=org.id, principal_id=principal.id, display_name="race", scopes=["inventory:read"]
        )
        # Futures put every call in flight at once, alternating between the two replicas.
        calls = [
            (
                replica.name,
                replica.admin.keys.CreateKey.future(request, metadata=replica.admin.metadata, timeout=60),
            )
            for _ in range(CONCURRENT // 2)
            for replica in (a, b)
        ]
        created: list[tuple[str, key_service_pb2.Key]] = []
        refused = []
        for name, call in calls:
            try:
                created.append((name, call.result().key))
            except grpc.RpcError as error:
                refused.append(details_of(error))
        assert len(created) == quota, f"round {round_number}: {len(created)} keys created{replicas.logs()}"
        assert {(d.code, d.reason) for d in refused} == {
            (grpc.StatusCode.RESOURCE_EXHAUSTED, "QUOTA_EXCEEDED")
        }
        assert all(d.domain == "identity" and d.error_infos == 1 for d in refused)
        assert len(refused) == CONCURRENT - quota
        ids = sorted(key.id for _, key in created)
        assert len(set(ids)) == quota
        for replica in (a, b):
            listed = replica.admin.keys.ListKeys(
                key_service_pb2.ListKeysRequest(org_id=org.id, principal_id=principal.id),
                metadata=replica.admin.metadata,
            ).keys
            assert sorted(k.id for k in listed) == ids, replica.name
        replicas.record(
            f"quota race round {round_number} (quota {quota}): created on {sorted(n for n, _ in created)}"
        )
