"""Fail closed: without a database every call is UNAVAILABLE, never an allow, and health says so.

Two ways to lose the database: a server that never reaches it, and an outage in the middle of
traffic (PostgreSQL behind a proxy that is cut, SQLite locked by another process; see
:mod:`tests.outages`) that ends without restarting the server.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy.engine import make_url

from identity.cache.states import FRESHNESS_SECONDS
from identity.config import Settings
from identity.crypto import apikeys
from identity.domain.model import KeyKind
from identity.server import HEALTH_CHECK_SECONDS, IdentityServer, build_server
from identity.store.database import POSTGRES_CONNECT_DEFAULTS, SQLITE_BUSY_SECONDS, Database
from identity.v1 import (
    authorization_service_pb2,
    authorization_service_pb2_grpc,
    common_pb2,
    key_service_pb2,
    token_service_pb2,
    token_service_pb2_grpc,
)
from tests.conftest import TEST_ARGON2, TEST_KEK, Harness
from tests.helpers import Admin, expect_error
from tests.outages import Outage, database_outage
from tests.sqlite_locks import WRITER, SqliteLockHolder
from tests.traffic import OK, UNAVAILABLE, Call, Traffic, attempt

# Nothing listens on port 1: every connection attempt is refused at once.
UNREACHABLE = "postgresql+psycopg://postgres@127.0.0.1:1/identity"


@pytest.fixture
def server_without_database() -> Iterator[tuple[IdentityServer, int]]:
    settings = Settings(database_url=UNREACHABLE, listen="127.0.0.1:0", argon2=TEST_ARGON2, kek=TEST_KEK)
    server, port = build_server(settings)
    server.start()
    yield server, port
    server.stop(0)


def test_calls_are_unavailable_and_health_not_serving(
    server_without_database: tuple[IdentityServer, int],
) -> None:
    _, port = server_without_database
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.NOT_SERVING
        # A key with a valid checksum gets past the format check and needs the database.
        key = apikeys.generate(KeyKind.SECRET, "live").plaintext
        admin = Admin(channel, key)
        expect_error(
            lambda: admin.keys.ListKeys(
                key_service_pb2.ListKeysRequest(org_id="org_x"), metadata=admin.metadata
            ),
            grpc.StatusCode.UNAVAILABLE,
            "UNAVAILABLE",
        )


@pytest.fixture
def silent_host() -> Iterator[str]:
    """A PostgreSQL URL whose host accepts connections and never answers, like a hung server."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                held.append(listener.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    yield f"postgresql+psycopg://postgres@127.0.0.1:{listener.getsockname()[1]}/identity"
    stop.set()
    for sock in (*held, listener):
        sock.close()


def test_a_silent_postgresql_host_fails_calls_within_the_connect_timeout(silent_host: str) -> None:
    settings = Settings(database_url=silent_host, listen="127.0.0.1:0", argon2=TEST_ARGON2, kek=TEST_KEK)
    server, port = build_server(settings)
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            admin = Admin(channel, apikeys.generate(KeyKind.SECRET, "live").plaintext)
            started = time.monotonic()
            expect_error(
                lambda: admin.keys.ListKeys(
                    key_service_pb2.ListKeysRequest(org_id="org_x"), metadata=admin.metadata, timeout=30
                ),
                grpc.StatusCode.UNAVAILABLE,
                "UNAVAILABLE",
            )
            waited = time.monotonic() - started
    finally:
        server.stop(0)
    connect_timeout = POSTGRES_CONNECT_DEFAULTS["connect_timeout"]
    assert connect_timeout - 1 <= waited <= 2 * connect_timeout + 2


# --- an outage in the middle of traffic ---------------------------------------------------------


@pytest.fixture
def outage(database_url: str) -> Iterator[Outage]:
    """A way to take the test database away from the server and give it back."""
    with database_outage(database_url) as outage:
        yield outage


@pytest.fixture
def settings(settings: Settings, outage: Outage) -> Settings:
    """The test server reaches its database the way the outage can take it away."""
    return settings.with_overrides(database_url=outage.url)


# SQLite answers a locked-out read or write with SQLITE_PROTOCOL after its own retries, about
# 10 s whatever the busy timeout; nothing the service sets makes that shorter.
SQLITE_RETRY_SECONDS = 10.0


@dataclass(frozen=True)
class Bounds:
    """What losing one kind of database may cost, in seconds counted from the cut."""

    fail_closed: float  # every call started this long after the cut fails
    longest_call: float  # no call, whenever made, takes longer
    not_serving: float  # health says NOT_SERVING by then
    cut_for: float  # how long the test keeps the database away


BOUNDS = {
    # The cut drops the change feed's LISTEN connection and every pooled one: the feed's next
    # catch-up (at once, or at its next 0.2 s poll) fails and the cache stops answering, and
    # refused connections fail every call in milliseconds. Health: one monitor period and a ping.
    "postgresql": Bounds(
        fail_closed=0.5, longest_call=2.0, not_serving=HEALTH_CHECK_SECONDS + 1.0, cut_for=3.0
    ),
    # Locked out, a catch-up blocks in SQLite's retries instead of failing, so the cache stops
    # answering when its freshness runs out (1 s past the last catch-up); calls and the health
    # ping then wait out those retries before failing. A write queued behind another (this
    # process's writers take turns) waits for its turn as long as that one waits on SQLite,
    # then waits on SQLite itself: up to twice as long.
    "sqlite": Bounds(
        fail_closed=FRESHNESS_SECONDS + 0.25,
        longest_call=SQLITE_BUSY_SECONDS + SQLITE_RETRY_SECONDS + 2.0,
        not_serving=HEALTH_CHECK_SECONDS + SQLITE_RETRY_SECONDS + 1.5,
        cut_for=FRESHNESS_SECONDS + SQLITE_RETRY_SECONDS + 2.0,
    ),
}
RECOVERY_SECONDS = 5.0  # after the database is back, every kind of call succeeds again within this
CALL_DEADLINE = 30.0  # client deadline: a call that hangs ends as DEADLINE_EXCEEDED, an outcome to fail on
COLD_KEYS = 120  # a successful cold call uses one up; calls before the cut and after it is over succeed
WARM_CHECK_KEY, WARM_CHECK_TOKEN, WARM_EXCHANGE = "warm check (key)", "warm check (token)", "warm exchange"
COLD_CHECK, COLD_EXCHANGE, ADMIN, HEALTH = "cold check", "cold exchange", "admin", "health"
PING = "ping"
DATABASE_CALLS = (WARM_CHECK_KEY, WARM_CHECK_TOKEN, WARM_EXCHANGE, COLD_CHECK, COLD_EXCHANGE, ADMIN)


class ColdKeys:
    """Keys the server never verified: each call takes one and gives it back unless it got verified."""

    def __init__(self, keys: list[str]) -> None:
        self._keys = deque(keys)
        self._lock = threading.Lock()

    def add(self, key: str) -> None:
        """One more key never verified."""
        with self._lock:
            self._keys.append(key)

    def take(self) -> str:
        """A key never verified (IndexError when the test made too few)."""
        with self._lock:
            return self._keys.popleft()


class Tenant:
    """An organization with warm and cold keys, and the call of each kind the traffic makes."""

    def __init__(self, harness: Harness, cold_keys: int = COLD_KEYS) -> None:
        self.admin = harness.admin()
        self.org_id = self.admin.create_org("Outage", max_keys_per_service_account=1000).id
        self.principal_id = self.admin.create_principal(self.org_id).id
        self.checks = authorization_service_pb2_grpc.AuthorizationServiceStub(harness.channel)
        self.tokens = token_service_pb2_grpc.TokenServiceStub(harness.channel)
        self.health = health_pb2_grpc.HealthStub(harness.channel)
        self.warm_key = self._new_key().api_key
        self.token = self.tokens.ExchangeApiKey(
            token_service_pb2.ExchangeApiKeyRequest(api_key=self.warm_key, lifetime=Duration(seconds=600))
        ).access_token
        assert [self.check(self.warm_key), self.check(self.token), self.exchange(self.warm_key)] == [OK] * 3
        with ThreadPoolExecutor(8) as pool:
            self.cold_keys = ColdKeys(
                [created.api_key for created in pool.map(self._new_key, range(cold_keys))]
            )
        self._revocable: list[str] = []  # keys the admin loop created, never used otherwise
        self._admin_calls = itertools.cycle((self.create_key, self.list_keys, self.revoke_key))

    def check(self, credential: str) -> str:
        """Check ``stock:read``: OK when allowed, else the denial's reason."""
        reply = self.checks.Check(
            authorization_service_pb2.CheckRequest(credential=credential, permissions=["stock:read"]),
            timeout=CALL_DEADLINE,
        )
        if reply.allowed:
            return OK
        return "DENIED " + common_pb2.DecisionReason.Name(reply.reason).removeprefix("DECISION_REASON_")

    def exchange(self, api_key: str) -> str:
        """A v2 exchange."""
        self.tokens.ExchangeApiKey(
            token_service_pb2.ExchangeApiKeyRequest(api_key=api_key), timeout=CALL_DEADLINE
        )
        return OK

    def cold(self, call_with: str) -> str:
        """Check or exchange (``call_with``) a key never verified; it stays cold unless the call succeeded."""
        key = self.cold_keys.take()
        outcome = attempt(lambda: self.check(key) if call_with == "check" else self.exchange(key))
        if outcome != OK:
            self.cold_keys.add(key)
        return outcome

    def admin_call(self) -> str:
        """The next of CreateKey, ListKeys, RevokeKey, in turn."""
        return next(self._admin_calls)()

    def health_status(self) -> str:
        """The server's overall health."""
        reply = self.health.Check(health_pb2.HealthCheckRequest(), timeout=CALL_DEADLINE)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

    def _new_key(self, _: object = None) -> key_service_pb2.CreateKeyResponse:
        request = key_service_pb2.CreateKeyRequest(
            org_id=self.org_id, principal_id=self.principal_id, display_name="outage", scopes=["stock:read"]
        )
        return self.admin.keys.CreateKey(request, metadata=self.admin.metadata, timeout=CALL_DEADLINE)

    def create_key(self) -> str:
        """CreateKey; the key joins those the admin loop revokes."""
        self._revocable.append(self._new_key().key.id)
        return OK

    def revoke_key(self) -> str:
        """RevokeKey of the newest key the admin loop created (ListKeys when there is none)."""
        if not self._revocable:
            return self.list_keys()
        request = key_service_pb2.RevokeKeyRequest(key_id=self._revocable[-1], reason="outage test")
        self.admin.keys.RevokeKey(request, metadata=self.admin.metadata, timeout=CALL_DEADLINE)
        self._revocable.pop()
        return OK

    def list_keys(self) -> str:
        """ListKeys, a read (the admin call of a probe, which must not race the loop's revocations)."""
        request = key_service_pb2.ListKeysRequest(org_id=self.org_id, page_size=5)
        self.admin.keys.ListKeys(request, metadata=self.admin.metadata, timeout=CALL_DEADLINE)
        return OK


def steps(tenant: Tenant) -> dict[str, Callable[[], str]]:
    """The call each kind of traffic makes."""
    return {
        WARM_CHECK_KEY: lambda: tenant.check(tenant.warm_key),
        WARM_CHECK_TOKEN: lambda: tenant.check(tenant.token),
        WARM_EXCHANGE: lambda: tenant.exchange(tenant.warm_key),
        COLD_CHECK: lambda: tenant.cold("check"),
        COLD_EXCHANGE: lambda: tenant.cold("exchange"),
        ADMIN: tenant.admin_call,
        HEALTH: tenant.health_status,
    }


# Cold calls cost an argon2id hash each and use up a key: fewer of them.
PAUSES = {COLD_CHECK: 0.1, COLD_EXCHANGE: 0.1, ADMIN: 0.05, HEALTH: 0.05}


def first(calls: list[Call], outcome: str, since: float) -> Call | None:
    """The first call started at ``since`` or later that answered ``outcome``."""
    return next((call for call in calls if call.started >= since and call.outcome == outcome), None)


def wait_for_recovery(traffic: Traffic, restored: float) -> None:
    """Wait until every kind of call has succeeded since ``restored`` (at most the recovery bound)."""
    deadline = restored + RECOVERY_SECONDS + 0.5
    while time.monotonic() < deadline:
        kinds = {
            call.kind
            for call in traffic.calls
            if call.started >= restored and call.outcome in (OK, "SERVING")
        }
        if kinds >= {*DATABASE_CALLS, HEALTH}:
            return
        time.sleep(0.05)


def test_an_outage_mid_traffic_fails_closed_then_recovers(harness: Harness, outage: Outage) -> None:
    """Warm and cold Checks, exchanges and admin calls run on their own threads while the database goes away.

    "After the cut" means: started ``Bounds.fail_closed`` seconds after the cut (the moment the
    proxy dropped its connections, or the lock holder held its locks) and ended before the
    database came back. Until then a warm credential may still be answered from memory, within
    the design's bound: on PostgreSQL the feed sees the loss at its next catch-up (0.2 s at most)
    and distrusts the cache at once, so 0.5 s leaves more than two polls of slack; a locked-out
    SQLite blocks that catch-up instead of failing it, so the cache stops answering when its
    freshness (1 s past the last catch-up) runs out, and 0.25 s is the slack. Calls that ended
    after the database came back may succeed: they read it then.

    After the cut every call of every kind answers UNAVAILABLE with its ErrorInfo: no allow, no
    other error, no hang (every call of the test ends within ``Bounds.longest_call``). Health
    turns NOT_SERVING within ``Bounds.not_serving`` and stays so until the database is back.
    Once it is, every kind of call succeeds again within 5 s, without a restart, and keeps
    succeeding; health says SERVING again.
    """
    bounds = BOUNDS[outage.kind]
    tenant = Tenant(harness)
    probe = Database(outage.url)
    assert probe.ping()
    traffic = Traffic()
    for kind, step in steps(tenant).items():
        traffic.add(kind, step, pause=PAUSES.get(kind, 0.02))
    try:
        time.sleep(1.0)
        cutting = time.monotonic()
        outage.cut()
        cut = time.monotonic()
        # One more call of each kind right at the fail-closed bound: a loop whose call was in
        # flight then (waiting out SQLite's retries) may have no other call inside the window.
        time.sleep(bounds.fail_closed)
        for kind, step in steps(tenant).items():
            if kind in DATABASE_CALLS:
                traffic.once(kind, tenant.list_keys if kind == ADMIN else step)
        # The health monitor's probe, on a connection opened before the cut and idle since.
        traffic.once(PING, lambda: "UP" if probe.ping() else "DOWN")
        time.sleep(bounds.cut_for - bounds.fail_closed)
        restored = time.monotonic()
        outage.restore()
        wait_for_recovery(traffic, restored)
        time.sleep(0.5)  # calls after recovery, every one of which must succeed
    finally:
        traffic.stop()
        probe.dispose()
    calls = traffic.of(DATABASE_CALLS)
    health = traffic.of([HEALTH])

    assert [c for c in calls if c.outcome not in (OK, UNAVAILABLE)] == []
    before_cut = [c for c in calls if c.ended < cutting]
    assert [c for c in before_cut if c.outcome != OK] == []
    assert {c.kind for c in before_cut} == set(DATABASE_CALLS), "every kind succeeded before the cut"
    after_cut = [c for c in calls if c.started >= cut + bounds.fail_closed and c.ended <= restored]
    assert [c for c in after_cut if c.outcome != UNAVAILABLE] == []
    assert {c.kind for c in after_cut} == set(DATABASE_CALLS), "every kind was called after the cut"
    slowest = max(calls, key=lambda c: c.seconds)
    assert slowest.seconds <= bounds.longest_call, slowest

    recovered = {}
    for kind in DATABASE_CALLS:
        own = [c for c in calls if c.kind == kind]
        success = first(own, OK, restored)
        assert success is not None and success.ended - restored <= RECOVERY_SECONDS, f"{kind} did not recover"
        assert [c for c in own if c.started >= success.ended and c.outcome != OK] == [], f"{kind} relapsed"
        recovered[kind] = round(success.ended - restored, 2)

    assert [c.outcome for c in traffic.of([PING])] == ["DOWN"]
    assert {c.outcome for c in health} <= {"SERVING", "NOT_SERVING"}, "health always answers"
    assert [c for c in health if c.ended < cutting and c.outcome != "SERVING"] == []
    down = first(health, "NOT_SERVING", cut)
    assert down is not None and down.ended - cut <= bounds.not_serving, down
    assert [
        c for c in health if down.started <= c.started and c.ended <= restored and c.outcome != "NOT_SERVING"
    ] == []
    up = first(health, "SERVING", restored)
    assert up is not None and up.ended - restored <= RECOVERY_SECONDS
    assert [c for c in health if c.started >= up.ended and c.outcome != "SERVING"] == []
    last_allow = max(c.ended - cut for c in calls if c.outcome == OK and c.ended <= restored)
    print(
        f"\n[{outage.kind}] {len(calls)} calls, {len(after_cut)} after the cut (all UNAVAILABLE);"
        f" the last success ended {last_allow:.2f} s after the cut;"
        f" slowest {slowest.seconds:.2f} s; NOT_SERVING {down.ended - cut:.2f} s after the cut;"
        f" recovered after {recovered} s, SERVING after {up.ended - restored:.2f} s"
    )


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_sqlite_write_lock_held_elsewhere_refuses_writes_promptly_and_reads_go_on(
    harness: Harness, database_url: str
) -> None:
    """Another process holding SQLite's write lock (``BEGIN IMMEDIATE``) locks out writers only.

    A write answers UNAVAILABLE once the busy timeout has passed, and no later: not after the
    30 s the timeout was, nor after a second wait to audit the refusal into the locked database.
    Reads, and so Checks and exchanges, warm or cold, go on with the committed truth, and health
    stays SERVING. Once the lock is gone, writes succeed again.
    """
    tenant = Tenant(harness, cold_keys=2)
    path = make_url(database_url).database
    assert path
    holder = SqliteLockHolder(path, WRITER)
    holder.acquire()
    try:
        started = time.monotonic()
        assert attempt(tenant.create_key) == UNAVAILABLE
        assert time.monotonic() - started <= SQLITE_BUSY_SECONDS + 1.0
        assert tenant.check(tenant.warm_key) == OK and tenant.check(tenant.token) == OK
        assert tenant.cold("check") == OK and tenant.cold("exchange") == OK
        assert tenant.health_status() == "SERVING"
    finally:
        holder.release()
    assert tenant.create_key() == OK and tenant.revoke_key() == OK
