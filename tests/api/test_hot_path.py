"""The hot path: warm credentials cost neither argon2 nor the database, cold ones are bounded,
floods are throttled, a fill that raced a revocation is never kept, and a stale cache fails closed."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask
from sqlalchemy import event
from sqlalchemy.engine import Connection

from identity import credentials
from identity.changefeed import POLL_SECONDS
from identity.checks import DecisionEngine
from identity.crypto import apikeys
from identity.crypto.hashing import SecretHasher
from identity.domain.errors import unavailable
from identity.domain.model import KeyKind
from identity.store import lookups
from identity.store.database import Database
from identity.v1 import (
    audit_service_pb2,
    authorization_service_pb2,
    authorization_service_pb2_grpc,
    common_pb2,
    key_service_pb2,
    token_service_pb2,
    token_service_pb2_grpc,
)
from tests.conftest import Harness
from tests.helpers import details_of, expect_error

RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED


class Tenant:
    """An organization with one service account and stubs for checks and tokens."""

    def __init__(self, harness: Harness) -> None:
        self.harness = harness
        self.admin = harness.admin()
        self.org_id = self.admin.create_org("Hot", max_keys_per_service_account=50).id
        self.principal_id = self.admin.create_principal(self.org_id).id
        self.checks = authorization_service_pb2_grpc.AuthorizationServiceStub(harness.channel)
        self.tokens = token_service_pb2_grpc.TokenServiceStub(harness.channel)

    def key(self) -> key_service_pb2.CreateKeyResponse:
        return self.admin.create_key(self.org_id, self.principal_id, ["stock:read"])

    def check(self, credential: str) -> authorization_service_pb2.CheckResponse:
        return self.checks.Check(
            authorization_service_pb2.CheckRequest(credential=credential, permissions=["stock:read"])
        )

    def exchange(self, api_key: str) -> token_service_pb2.ExchangeApiKeyResponse:
        return self.tokens.ExchangeApiKey(
            token_service_pb2.ExchangeApiKeyRequest(api_key=api_key, lifetime=Duration(seconds=600))
        )

    def revoke(self, key_id: str) -> None:
        self.admin.keys.RevokeKey(
            key_service_pb2.RevokeKeyRequest(key_id=key_id), metadata=self.admin.metadata
        )


@pytest.fixture
def tenant(harness: Harness) -> Tenant:
    return Tenant(harness)


def audit_events(tenant: Tenant, action: str) -> list[audit_service_pb2.AuditEvent]:
    """Every audit event of ``action``, in any organization (refused credentials have none)."""
    return list(
        tenant.admin.audit.ListAuditEvents(
            audit_service_pb2.ListAuditEventsRequest(action=action, page_size=1000),
            metadata=tenant.admin.metadata,
        ).events
    )


@contextmanager
def counted(db: Database, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, int]]:
    """Count SQL statements made on request threads, and argon2 verifications, while inside."""
    counts = {"sql": 0, "argon2": 0}

    def on_request_thread() -> bool:
        return threading.current_thread().name.startswith("rpc")

    def statement(*_: Any) -> None:
        if on_request_thread():
            counts["sql"] += 1

    verify = SecretHasher.verify

    def counting_verify(self: SecretHasher, encoded: str | None, secret: str) -> bool:
        counts["argon2"] += 1  # on the argon2 pool's threads, for whichever request asked
        return verify(self, encoded, secret)

    event.listen(db.engine, "before_cursor_execute", statement)
    monkeypatch.setattr(SecretHasher, "verify", counting_verify)
    try:
        yield counts
    finally:
        event.remove(db.engine, "before_cursor_execute", statement)


def test_warm_credentials_touch_neither_argon2_nor_the_database(
    tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = tenant.key()
    token = tenant.exchange(created.api_key).access_token
    assert tenant.check(created.api_key).allowed and tenant.check(token).allowed  # now warm
    with counted(tenant.harness.db, monkeypatch) as counts:
        for _ in range(30):
            assert tenant.check(created.api_key).allowed
            assert tenant.check(token).allowed
            assert tenant.exchange(created.api_key).access_token
    assert counts == {"sql": 0, "argon2": 0}
    # A cold credential does both: proof that the counters see what they claim to.
    with counted(tenant.harness.db, monkeypatch) as counts:
        assert tenant.check(tenant.key().api_key).allowed
    assert counts["sql"] > 0 and counts["argon2"] == 1


def test_a_fill_that_raced_a_revocation_is_not_kept(tenant: Tenant, monkeypatch: pytest.MonkeyPatch) -> None:
    created = tenant.key()
    raced: list[bool] = []

    def read_then_revoke(connection: Connection, lookup: str) -> Any:
        found = lookups.credential_by_lookup(connection, lookup)
        if not raced:  # the revocation commits (and is applied) after this read, before the fill
            raced.append(True)
            tenant.revoke(created.key.id)
        return found

    monkeypatch.setattr(credentials, "credential_by_lookup", read_then_revoke)
    # The racing check saw the key before the revocation: allowing it is linearizable...
    assert tenant.check(created.api_key).allowed and raced
    # ...but what it read must not outlive the revocation: every later answer is REVOKED.
    for _ in range(5):
        assert tenant.check(created.api_key).reason == common_pb2.DECISION_REASON_REVOKED_API_KEY


def scopes_set(tenant: Tenant, key_id: str, scopes: list[str]) -> None:
    key = key_service_pb2.Key(id=key_id, scopes=scopes)
    request = key_service_pb2.UpdateKeyRequest(key=key, update_mask=FieldMask(paths=["scopes"]))
    tenant.admin.keys.UpdateKey(request, metadata=tenant.admin.metadata)


@contextmanager
def judged(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The credentials the decision engine judges (memo hits included) while inside.

    A call tried on the event loop that would wait there is judged again on a request thread
    (see ``identity.services.loop``): only the judgement that came to an end is counted.
    """
    seen: list[str] = []
    check = DecisionEngine.check

    def counting_check(self: DecisionEngine, credential: str, *rest: Any) -> Any:
        decision = check(self, credential, *rest)
        seen.append(credential)
        return decision

    monkeypatch.setattr(DecisionEngine, "check", counting_check)
    yield seen
    monkeypatch.setattr(DecisionEngine, "check", check)


def test_a_repeated_check_gets_its_remembered_answer_until_anything_changes(
    tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = tenant.key()
    first = tenant.check(created.api_key)
    assert first.allowed and list(first.granted_scopes) == ["stock:read"]
    with judged(monkeypatch) as seen:
        repeats = [tenant.check(created.api_key) for _ in range(5)]
    assert seen == [] and all(r == first for r in repeats)  # answered from its request bytes alone
    # Still allowed, but the answer says more now: it is built anew, never the old bytes.
    scopes_set(tenant, created.key.id, ["stock:read", "stock:write"])
    with judged(monkeypatch) as seen:
        again = tenant.check(created.api_key)
    assert seen == [created.api_key] and list(again.granted_scopes) == ["stock:read", "stock:write"]
    # No longer allowed: the very next ask, in the same bytes, is denied.
    scopes_set(tenant, created.key.id, ["stock:write"])
    denied = tenant.check(created.api_key)
    assert (denied.allowed, denied.reason) == (False, common_pb2.DECISION_REASON_INSUFFICIENT_SCOPE)


def test_check_bytes_that_are_no_check_request_are_invalid_argument(tenant: Tenant) -> None:
    raw_check = tenant.harness.channel.unary_unary("/identity.v1.AuthorizationService/Check")
    details = expect_error(
        lambda: raw_check(b"\xff\xff\xff"), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"
    )
    assert details.message == "the request is not a valid encoded message"


@pytest.mark.settings(audit_check_allows=True)
def test_allows_audited_one_by_one_are_each_judged(tenant: Tenant, monkeypatch: pytest.MonkeyPatch) -> None:
    created = tenant.key()
    with judged(monkeypatch) as seen:
        assert all(tenant.check(created.api_key).allowed for _ in range(3))
    assert len(seen) == 3
    tenant.harness.server.writer.flush()
    allows = [e for e in audit_events(tenant, "authz.check") if e.target == created.key.id]
    assert [e.outcome for e in allows] == [audit_service_pb2.AUDIT_OUTCOME_SUCCESS] * 3


@pytest.mark.settings(argon2_threads=1, argon2_queue=1)
def test_a_full_argon2_pool_refuses_at_once(tenant: Tenant, monkeypatch: pytest.MonkeyPatch) -> None:
    keys = [tenant.key().api_key for _ in range(6)]
    verify = SecretHasher.verify
    release = threading.Event()

    def held_verify(self: SecretHasher, encoded: str | None, secret: str) -> bool:
        release.wait(timeout=30)  # a verification that lasts until the refusals are in
        return verify(self, encoded, secret)

    monkeypatch.setattr(SecretHasher, "verify", held_verify)

    def exchange(api_key: str) -> str:
        try:
            tenant.exchange(api_key)
            return "OK"
        except grpc.RpcError as error:
            details = details_of(error)
            return f"{details.code.name} {details.reason}"

    with ThreadPoolExecutor(len(keys)) as pool:
        calls = [pool.submit(exchange, api_key) for api_key in keys]
        deadline = time.monotonic() + 20
        while sum(call.done() for call in calls) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        # One verifies, one waits for it; the others are answered while the first still runs.
        answered_first = [call.result() for call in calls if call.done()]
        release.set()
        outcomes = [call.result() for call in calls]
    assert answered_first == ["RESOURCE_EXHAUSTED RATE_LIMITED"] * 4, outcomes
    assert sorted(outcomes) == ["OK"] * 2 + ["RESOURCE_EXHAUSTED RATE_LIMITED"] * 4, outcomes


def test_a_wrong_secret_flood_is_throttled_and_warm_credentials_go_on(tenant: Tenant) -> None:
    created = tenant.key()
    assert tenant.check(created.api_key).allowed  # warm
    parsed = apikeys.parse(created.api_key)
    assert parsed is not None
    wrong = apikeys.generate(parsed.kind, parsed.environment, parsed.lookup).plaintext
    answers = []
    for _ in range(14):
        try:
            answers.append(tenant.check(wrong).reason)
        except grpc.RpcError as error:
            answers.append(error.code())
    assert (
        answers[:10] == [common_pb2.DECISION_REASON_INVALID_API_KEY] * 10
    )  # the default allows a lookup handle 10 failures a minute
    assert answers[10:] == [RESOURCE_EXHAUSTED] * 4
    details = expect_error(lambda: tenant.check(wrong), RESOURCE_EXHAUSTED, "RATE_LIMITED")
    assert created.api_key not in details.message
    # Audited: each refusal before the throttle on its own, the throttled ones as one row.
    tenant.harness.server.writer.flush()
    events = audit_events(tenant, "authz.check")
    assert [e.reason for e in events].count("INVALID_API_KEY") == 10
    throttled = [e for e in events if e.reason == "RATE_LIMITED"]
    assert len(throttled) == 1 and throttled[0].details["attempts"] == "5", throttled
    assert wrong not in str(events)
    # The flood costs the warm holder of the real key nothing...
    assert all(tenant.check(created.api_key).allowed for _ in range(20))
    # ...and its exchanges too (the secret is known to this process).
    assert tenant.exchange(created.api_key).access_token


@pytest.mark.settings(failed_attempts_per_peer=5)
def test_a_peer_that_fails_too_often_is_throttled(tenant: Tenant) -> None:
    unknown = [apikeys.generate(KeyKind.SECRET, "live").plaintext for _ in range(7)]
    answers = []
    for key in unknown:
        try:
            answers.append(tenant.exchange(key) and "OK")
        except grpc.RpcError as error:
            answers.append(error.code().name)
    assert answers == ["UNAUTHENTICATED"] * 5 + ["RESOURCE_EXHAUSTED"] * 2
    tenant.harness.server.writer.flush()
    throttled = [e for e in audit_events(tenant, "token.exchange") if e.reason == "RATE_LIMITED"]
    assert [e.details["attempts"] for e in throttled] == ["2"] and throttled[0].peer.startswith("ipv")
    # Check names the end client: a different client address is not throttled by the caller's failures.
    reply = tenant.checks.Check(
        authorization_service_pb2.CheckRequest(
            credential=unknown[0], permissions=["stock:read"], client_ip="10.9.8.7"
        )
    )
    assert reply.reason == common_pb2.DECISION_REASON_INVALID_API_KEY


def test_a_stale_cache_fails_closed_then_recovers(tenant: Tenant, monkeypatch: pytest.MonkeyPatch) -> None:
    created = tenant.key()
    token = tenant.exchange(created.api_key).access_token
    assert tenant.check(created.api_key).allowed and tenant.check(token).allowed  # warm

    def database_down(self: Database) -> Any:
        raise unavailable()

    for opening in ("read", "read_once", "write", "change_log_head"):
        monkeypatch.setattr(Database, opening, database_down)
    time.sleep(POLL_SECONDS * 2)  # the feed's next catch-up fails: the cache stops answering
    expect_error(lambda: tenant.check(created.api_key), grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE")
    expect_error(lambda: tenant.check(token), grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE")
    expect_error(lambda: tenant.exchange(created.api_key), grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE")
    monkeypatch.undo()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            if tenant.check(created.api_key).allowed:
                break
        except grpc.RpcError:
            time.sleep(0.05)
    assert tenant.check(created.api_key).allowed and tenant.check(token).allowed
