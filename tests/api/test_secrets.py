"""A secret never reaches a log, an audit row, a change-log snapshot, a response or the database.

One flow creates, reads, lists, updates, exchanges, rotates and revokes a key and sets a service
account's password; every sink is then searched for each plaintext key, its secret part, and the
password. Only argon2id hashes may be stored.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import timedelta

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message
from sqlalchemy import text

from identity.crypto import apikeys
from identity.logs import JsonFormatter, TextFormatter
from identity.v1 import (
    audit_service_pb2,
    authorization_service_pb2,
    key_service_pb2,
    principal_service_pb2,
    token_service_pb2,
    token_service_pb2_grpc,
)
from tests.conftest import Harness
from tests.helpers import Admin, auth, details_of, stored_values

PASSWORD = "correct-horse-battery-staple-42"


def secret_part(plaintext: str) -> str:
    parsed = apikeys.parse(plaintext)
    assert parsed is not None
    return parsed.secret


@dataclass
class Flow:
    """What the flow produced: the values that must stay secret and everything that came back."""

    org_id: str
    key_id: str
    lookup: str
    secrets: dict[str, str] = field(default_factory=dict)
    responses: list[Message] = field(default_factory=list)
    error_messages: list[str] = field(default_factory=list)


def expect_refused(flow: Flow, call: grpc.UnaryUnaryMultiCallable, request: Message, **kw: object) -> str:
    try:
        call(request, **kw)
    except grpc.RpcError as error:
        details = details_of(error)
        flow.error_messages.append(details.message)
        return details.reason
    raise AssertionError("the call succeeded")


def run_flow(harness: Harness) -> Flow:
    admin = harness.admin()
    md = admin.metadata
    tokens = token_service_pb2_grpc.TokenServiceStub(harness.channel)
    org = admin.create_org("Secrets Inc")
    account = admin.create_principal(org.id)

    created = admin.create_key(org.id, account.id, ["inventory:read", "admin:apikeys"], description="the key")
    plaintext = created.api_key
    # The one place the plaintext may appear, found by the same search the checks below use.
    assert plaintext.encode() in created.SerializeToString()
    key_id = created.key.id
    parsed = apikeys.parse(plaintext)
    assert parsed is not None
    flow = Flow(org.id, key_id, parsed.lookup)
    flow.secrets |= {
        "plaintext": plaintext,
        "secret": parsed.secret,
        "platform plaintext": harness.platform_key,
        "platform secret": secret_part(harness.platform_key),
    }
    flow.responses.append(created.key)

    # Use the key as a caller (bearer and x-api-key), read and list it, update it.
    as_key = harness.admin(plaintext)
    whoami = authorization_service_pb2.WhoAmIRequest()
    flow.responses.append(as_key.authz.WhoAmI(whoami, metadata=auth(plaintext)))
    flow.responses.append(as_key.authz.WhoAmI(whoami, metadata=(("x-api-key", plaintext),)))
    flow.responses.append(admin.keys.GetKey(key_service_pb2.GetKeyRequest(id=key_id), metadata=md))
    flow.responses.append(
        as_key.keys.GetKey(key_service_pb2.GetKeyRequest(id=key_id), metadata=as_key.metadata)
    )
    flow.responses.append(admin.keys.ListKeys(key_service_pb2.ListKeysRequest(org_id=org.id), metadata=md))
    update = key_service_pb2.UpdateKeyRequest(
        key=key_service_pb2.Key(id=key_id, display_name="renamed"),
        update_mask=FieldMask(paths=["display_name"]),
    )
    flow.responses.append(admin.keys.UpdateKey(update, metadata=md))

    # Exchange it for tokens (v2, v3, client credentials).
    flow.responses.append(tokens.ExchangeApiKey(token_service_pb2.ExchangeApiKeyRequest(api_key=plaintext)))
    flow.responses.append(
        tokens.ExchangeApiKeyWithId(
            token_service_pb2.ExchangeApiKeyWithIdRequest(key_id=key_id, api_key=plaintext)
        )
    )
    flow.responses.append(
        tokens.ExchangeClientCredentials(
            token_service_pb2.ExchangeClientCredentialsRequest(
                grant_type="client_credentials", client_id=key_id, client_secret=plaintext, org_id=org.id
            )
        )
    )

    # A wrong secret for the same lookup: refused, and the attempt leaves no trace of itself either.
    forged = apikeys.generate(parsed.kind, parsed.environment, parsed.lookup).plaintext
    flow.secrets |= {"forged": forged, "forged secret": secret_part(forged)}
    assert expect_refused(flow, as_key.authz.WhoAmI, whoami, metadata=auth(forged)) == "INVALID_API_KEY"
    assert (
        expect_refused(flow, tokens.ExchangeApiKey, token_service_pb2.ExchangeApiKeyRequest(api_key=forged))
        == "INVALID_API_KEY"
    )

    # Rotate with a grace period: both secrets work for a while.
    grace = Duration()
    grace.FromTimedelta(timedelta(hours=1))
    rotated = admin.keys.RotateKey(
        key_service_pb2.RotateKeyRequest(key_id=key_id, grace_period=grace), metadata=md
    )
    new_plaintext = rotated.api_key
    assert new_plaintext and new_plaintext != plaintext
    flow.secrets |= {"rotated plaintext": new_plaintext, "rotated secret": secret_part(new_plaintext)}
    flow.responses.append(rotated.key)
    flow.responses.append(as_key.authz.WhoAmI(whoami, metadata=auth(plaintext)))
    flow.responses.append(as_key.authz.WhoAmI(whoami, metadata=auth(new_plaintext)))
    flow.responses.append(admin.keys.GetKey(key_service_pb2.GetKeyRequest(id=key_id), metadata=md))

    # A service account password and the legacy flow.
    flow.secrets["password"] = PASSWORD
    set_password = principal_service_pb2.SetPrincipalPasswordRequest(
        principal_id=account.id, password=PASSWORD
    )
    flow.responses.append(admin.principals.SetPrincipalPassword(set_password, metadata=md))
    flow.responses.append(
        admin.principals.GetPrincipal(principal_service_pb2.GetPrincipalRequest(id=account.id), metadata=md)
    )
    flow.responses.append(
        admin.principals.ListPrincipals(
            principal_service_pb2.ListPrincipalsRequest(org_id=org.id), metadata=md
        )
    )
    flow.responses.append(
        tokens.ExchangePassword(
            token_service_pb2.ExchangePasswordRequest(
                username=account.id, password=PASSWORD, client_id=key_id, client_secret=new_plaintext
            )
        )
    )
    wrong_password = token_service_pb2.ExchangePasswordRequest(
        username=account.id, password=PASSWORD + "x", client_id=key_id, client_secret=new_plaintext
    )
    expect_refused(flow, tokens.ExchangePassword, wrong_password)

    # Revoke; the revoked key is refused as a caller.
    revoke = key_service_pb2.RevokeKeyRequest(key_id=key_id, reason="leaked in a test")
    flow.responses.append(admin.keys.RevokeKey(revoke, metadata=md))
    assert (
        expect_refused(flow, as_key.authz.WhoAmI, whoami, metadata=auth(new_plaintext)) == "REVOKED_API_KEY"
    )
    flow.responses.append(admin.keys.GetKey(key_service_pb2.GetKeyRequest(id=key_id), metadata=md))
    flow.responses.append(
        admin.keys.ListKeys(
            key_service_pb2.ListKeysRequest(org_id=org.id, state=key_service_pb2.KEY_STATE_REVOKED),
            metadata=md,
        )
    )
    flow.responses.extend(audit_pages(admin))
    flow.responses.extend(watched_events(admin, org.id, count=4))
    return flow


def audit_pages(admin: Admin) -> list[Message]:
    pages: list[Message] = []
    token = ""
    while True:
        request = audit_service_pb2.ListAuditEventsRequest(page_size=100, page_token=token)
        response = admin.audit.ListAuditEvents(request, metadata=admin.metadata)
        pages.append(response)
        token = response.next_page_token
        if not token:
            return pages


def watched_events(admin: Admin, org_id: str, count: int) -> list[Message]:
    """The first ``count`` key events of the organization, from WatchKeyEvents."""
    request = key_service_pb2.WatchKeyEventsRequest(org_id=org_id, after_cursor=0)
    stream = admin.keys.WatchKeyEvents(request, metadata=admin.metadata, timeout=15)
    events: list[Message] = []
    for response in stream:
        events.append(response)
        if len(events) == count:
            stream.cancel()
            break
    types = {e.event.type for e in events}  # type: ignore[attr-defined]
    assert {key_service_pb2.KEY_EVENT_TYPE_CREATED, key_service_pb2.KEY_EVENT_TYPE_ROTATED} <= types
    return events


def leaks(flow: Flow, haystack: str | bytes) -> list[str]:
    """The names of the secrets that occur in ``haystack``."""
    if isinstance(haystack, bytes):
        return [name for name, value in flow.secrets.items() if value.encode() in haystack]
    return [name for name, value in flow.secrets.items() if value in haystack]


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    # set_level sets the capture handler's level too, so the DEBUG calls come last.
    caplog.set_level(logging.INFO, logger="sqlalchemy.engine")  # statements and their parameters
    for name in ("identity", "identity.rpc", "grpc"):
        caplog.set_level(logging.DEBUG, logger=name)
    caplog.set_level(logging.DEBUG)
    assert caplog.handler.level == logging.DEBUG
    return caplog


def test_no_log_line_holds_a_secret(harness: Harness, debug_logs: pytest.LogCaptureFixture) -> None:
    flow = run_flow(harness)
    records = debug_logs.records
    rpc_lines = [TextFormatter().format(r) for r in records if r.name == "identity.rpc"]
    # The capture works: the server's per-RPC lines, including refusals, are in it.
    assert any("KeyService/RotateKey" in line for line in rpc_lines), rpc_lines[:5]
    assert any("WhoAmI" in line and flow.key_id in line for line in rpc_lines), rpc_lines[:5]
    assert any("INVALID_API_KEY" in line for line in rpc_lines)
    assert any(r.name.startswith("sqlalchemy.engine") for r in records)
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    for record in records:
        rendered = formatter.format(record) + JsonFormatter().format(record) + repr(record.__dict__)
        assert not leaks(flow, rendered), (leaks(flow, rendered), record.name, record.getMessage()[:200])


def test_no_audit_row_holds_a_secret(harness: Harness) -> None:
    flow = run_flow(harness)
    with harness.db.engine.connect() as connection:
        rows = [dict(row._mapping) for row in connection.execute(text("SELECT * FROM audit_events"))]
    actions = {row["action"] for row in rows}
    assert {"key.create", "key.update", "key.rotate", "key.revoke", "principal.set_password"} <= actions, (
        actions
    )
    for row in rows:
        details = row["details"] if isinstance(row["details"], str) else json.dumps(row["details"])
        assert not leaks(flow, details), (row["action"], details)
        assert not leaks(flow, repr(row)), row["action"]


def test_no_key_change_snapshot_holds_a_secret_or_a_hash(harness: Harness) -> None:
    flow = run_flow(harness)
    with harness.db.engine.connect() as connection:
        rows = list(connection.execute(text("SELECT type, snapshot FROM key_changes")))
    assert {"created", "updated", "rotated", "revoked"} <= {row.type for row in rows}
    for row in rows:
        snapshot = row.snapshot if isinstance(row.snapshot, str) else json.dumps(row.snapshot)
        assert not leaks(flow, snapshot), (row.type, snapshot)
        assert "argon2" not in snapshot and "hash" not in snapshot, snapshot


def test_no_response_holds_a_secret_or_a_hash(harness: Harness) -> None:
    flow = run_flow(harness)
    assert len(flow.responses) > 20
    for response in flow.responses:
        raw = response.SerializeToString()
        assert not leaks(flow, raw), (type(response).__name__, leaks(flow, raw))
        assert b"argon2" not in raw, type(response).__name__
        assert not leaks(flow, str(response)), type(response).__name__
    assert len(flow.error_messages) == 4
    for message in flow.error_messages:
        assert not leaks(flow, message), message


def test_the_database_holds_only_argon2id_hashes(harness: Harness) -> None:
    flow = run_flow(harness)
    values = stored_values(harness.db.engine)
    # The dump reaches the key rows: their non-secret lookup handle is there.
    assert any(value == flow.lookup for _, _, value in values)
    for table, column, value in values:
        assert not leaks(flow, value), (table, column, leaks(flow, value))
    with harness.db.engine.connect() as connection:
        keys = list(connection.execute(text("SELECT id, secret_hash, previous_secret_hash FROM api_keys")))
        passwords = list(
            connection.execute(text("SELECT password_hash FROM principals WHERE password_hash IS NOT NULL"))
        )
    assert len(keys) == 2  # the platform key and ours
    for key in keys:
        assert key.secret_hash.startswith("$argon2id$"), key.id
    ours = next(key for key in keys if key.id == flow.key_id)
    assert ours.previous_secret_hash is not None and ours.previous_secret_hash.startswith("$argon2id$")
    assert ours.previous_secret_hash != ours.secret_hash
    assert len(passwords) == 1 and passwords[0].password_hash.startswith("$argon2id$")
