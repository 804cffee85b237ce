"""AuditService over a real server: what admin actions record, and how the trail is read."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from functools import partial
from typing import Any

import grpc
from google.protobuf import duration_pb2, field_mask_pb2, timestamp_pb2

from identity.v1 import audit_service_pb2, authorization_service_pb2, key_service_pb2, principal_service_pb2
from tests.conftest import Harness
from tests.helpers import Admin, expect_error

USER = principal_service_pb2.PRINCIPAL_KIND_USER
SUCCESS = audit_service_pb2.AUDIT_OUTCOME_SUCCESS
FAILURE = audit_service_pb2.AUDIT_OUTCOME_FAILURE
DENIED = audit_service_pb2.AUDIT_OUTCOME_DENIED
TENANT_SCOPES = ["admin:apikeys", "admin:users", "read:audit"]


def events(admin: Admin, page_size: int = 0, **filters: Any) -> list[audit_service_pb2.AuditEvent]:
    """Every audit event of a query, following the pages."""
    found: list[audit_service_pb2.AuditEvent] = []
    token = ""
    for _ in range(200):
        response = admin.audit.ListAuditEvents(
            audit_service_pb2.ListAuditEventsRequest(page_size=page_size, page_token=token, **filters),
            metadata=admin.metadata,
        )
        assert len(response.events) <= (page_size or 50)
        found += response.events
        token = response.next_page_token
        if not token:
            return found
    raise AssertionError("ListAuditEvents never returned an empty next_page_token")


def only(admin: Admin, **filters: Any) -> audit_service_pb2.AuditEvent:
    """The one audit event a query finds."""
    found = events(admin, **filters)
    assert len(found) == 1, [(e.action, e.target, e.outcome) for e in found]
    return found[0]


def timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    """A Timestamp message."""
    message = timestamp_pb2.Timestamp()
    message.FromDatetime(moment)
    return message


def key_id_of(harness: Harness, api_key: str) -> tuple[str, str]:
    """(key id, principal id) of a working API key, from WhoAmI."""
    caller = harness.admin(api_key)
    me = caller.authz.WhoAmI(authorization_service_pb2.WhoAmIRequest(), metadata=caller.metadata)
    return me.key_id, me.principal_id


def test_each_admin_action_writes_one_event(harness: Harness) -> None:
    admin = harness.admin()
    platform_key_id, platform_principal = key_id_of(harness, harness.platform_key)
    org = admin.create_org("Audited")
    account = admin.create_principal(org.id)
    admin_key = admin.create_key(org.id, account.id, TENANT_SCOPES)
    tenant = harness.admin(admin_key.api_key)
    tenant_key_id = admin_key.key.id

    created_org = only(admin, org_id=org.id, action="organization.create")
    assert (created_org.target, created_org.org_id, created_org.outcome) == (org.id, org.id, SUCCESS)
    assert (created_org.actor_key_id, created_org.actor_principal_id) == (platform_key_id, platform_principal)
    assert created_org.id.startswith("evt_") and created_org.HasField("time")

    user = tenant.create_principal(org.id, USER, "alice")
    created = tenant.create_key(org.id, user.id, ["admin:apikeys"])
    key_id = created.key.id
    tenant.keys.UpdateKey(
        key_service_pb2.UpdateKeyRequest(
            key=key_service_pb2.Key(id=key_id, display_name="renamed"),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
        ),
        metadata=tenant.metadata,
    )
    rotated = tenant.keys.RotateKey(
        key_service_pb2.RotateKeyRequest(key_id=key_id, grace_period=duration_pb2.Duration(seconds=60)),
        metadata=tenant.metadata,
    )
    tenant.keys.RevokeKey(
        key_service_pb2.RevokeKeyRequest(key_id=key_id, reason="rotated out"), metadata=tenant.metadata
    )
    tenant.keys.DeleteKey(key_service_pb2.DeleteKeyRequest(key_id=key_id), metadata=tenant.metadata)

    # Every event about the key, newest first: one per action.
    trail = events(admin, org_id=org.id, key_id=key_id)
    assert [e.action for e in trail] == ["key.delete", "key.revoke", "key.rotate", "key.update", "key.create"]
    for event in trail:
        assert (event.target, event.org_id, event.outcome, event.reason) == (key_id, org.id, SUCCESS, "")
        assert (event.actor_key_id, event.actor_principal_id) == (tenant_key_id, account.id)
        assert event.peer and event.HasField("time")
        for secret in (created.api_key, rotated.api_key, admin_key.api_key):
            assert secret not in str(event)
    times = [e.time.ToDatetime() for e in trail]
    assert times == sorted(times, reverse=True)
    by_action = {e.action: e for e in trail}
    assert by_action["key.create"].details["scopes"] == "admin:apikeys"
    assert by_action["key.create"].details["principal_id"] == user.id
    assert by_action["key.revoke"].details["reason"] == "rotated out"
    assert by_action["key.rotate"].details["grace_seconds"] == "60"
    assert by_action["key.update"].details["fields"] == "display_name"
    for action in by_action:
        assert only(admin, org_id=org.id, key_id=key_id, action=action).id == by_action[action].id

    principal_created = only(admin, org_id=org.id, principal_id=user.id, action="principal.create")
    assert (principal_created.target, principal_created.outcome) == (user.id, SUCCESS)
    assert (principal_created.actor_key_id, principal_created.actor_principal_id) == (
        tenant_key_id,
        account.id,
    )
    # The tenant reads the same trail of its own organization.
    assert [e.id for e in events(tenant, key_id=key_id)] == [e.id for e in trail]


def test_refused_actions_write_one_event(harness: Harness) -> None:
    admin = harness.admin()
    org_id, account_id, key = admin.tenant_admin(max_keys_per_user=1)
    tenant = harness.admin(key)
    tenant_key_id, _ = key_id_of(harness, key)
    user = tenant.create_principal(org_id, USER, "alice")
    tenant.create_key(org_id, user.id, ["admin:apikeys"])
    assert events(admin, org_id=org_id, outcome=FAILURE) == []
    assert events(admin, org_id=org_id, outcome=DENIED) == []

    expect_error(
        partial(tenant.create_key, org_id, user.id, ["admin:apikeys"]),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "QUOTA_EXCEEDED",
    )
    failed = only(admin, org_id=org_id, outcome=FAILURE)
    assert (failed.action, failed.reason, failed.org_id) == ("key.create", "QUOTA_EXCEEDED", org_id)
    assert (failed.actor_key_id, failed.actor_principal_id) == (tenant_key_id, account_id)
    assert failed.target == user.id

    # Escalation: the tenant admin lacks billing:write, so it cannot grant it.
    robot = tenant.create_principal(org_id, name="robot")
    expect_error(
        partial(tenant.create_key, org_id, robot.id, ["billing:write"]),
        grpc.StatusCode.PERMISSION_DENIED,
        "INSUFFICIENT_SCOPE",
    )
    denied = only(admin, org_id=org_id, outcome=DENIED)
    assert (denied.action, denied.reason, denied.target) == ("key.create", "INSUFFICIENT_SCOPE", robot.id)
    assert (denied.actor_key_id, denied.actor_principal_id) == (tenant_key_id, account_id)
    assert only(admin, org_id=org_id, outcome=FAILURE).id == failed.id

    # A caller without the RPC's scope is refused and recorded too.
    auditor = tenant.create_key(org_id, robot.id, ["read:audit"])
    auditor_key_id = auditor.key.id
    expect_error(
        partial(harness.admin(auditor.api_key).create_principal, org_id, USER, "eve"),
        grpc.StatusCode.PERMISSION_DENIED,
        "INSUFFICIENT_SCOPE",
    )
    refused = only(admin, org_id=org_id, outcome=DENIED, key_id=auditor_key_id)
    assert (refused.action, refused.reason, refused.actor_key_id) == (
        "principal.create",
        "INSUFFICIENT_SCOPE",
        auditor_key_id,
    )
    assert len(events(admin, org_id=org_id, outcome=DENIED)) == 2

    # Refusals created nothing: the admin key (by the platform), then the tenant's two keys.
    successes = events(admin, org_id=org_id, action="key.create", outcome=SUCCESS)
    assert len(successes) == 3
    assert len(events(admin, org_id=org_id, action="principal.create", outcome=SUCCESS)) == 3

    # A caller that fails to authenticate leaves no event.
    before = len(events(admin, org_id=org_id))
    expect_error(
        partial(harness.admin("idk_live_not_a_key").create_principal, org_id, USER, "x"),
        grpc.StatusCode.UNAUTHENTICATED,
        "INVALID_API_KEY",
    )
    assert len(events(admin, org_id=org_id)) == before


def test_list_filters_and_pages_newest_first(harness: Harness) -> None:
    admin = harness.admin()
    org_id, _, key = admin.tenant_admin()
    tenant = harness.admin(key)
    early = [tenant.create_principal(org_id, USER, f"early {n}").id for n in range(3)]
    time.sleep(0.01)
    middle = datetime.now(UTC)
    time.sleep(0.01)
    late = [tenant.create_principal(org_id, USER, f"late {n}").id for n in range(2)]

    everything = events(tenant)
    assert len(everything) == 8  # organization.create, principal.create, key.create, then 5 principals
    assert [e.action for e in everything[:5]] == ["principal.create"] * 5
    assert [e.target for e in everything[:5]] == [*reversed(late), *reversed(early)]
    assert [e.action for e in everything[5:]] == ["key.create", "principal.create", "organization.create"]
    ids = [e.id for e in everything]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == len(ids)
    times = [e.time.ToDatetime() for e in everything]
    assert times == sorted(times, reverse=True)
    for size in (1, 3, 7):
        assert [e.id for e in events(tenant, page_size=size)] == ids
    first_page = tenant.audit.ListAuditEvents(
        audit_service_pb2.ListAuditEventsRequest(page_size=8), metadata=tenant.metadata
    )
    assert len(first_page.events) == 8 and first_page.next_page_token == ""

    assert [e.target for e in events(tenant, action="principal.create", page_size=2)][:5] == [
        *reversed(late),
        *reversed(early),
    ]
    assert len(events(tenant, outcome=SUCCESS)) == 8
    assert events(tenant, outcome=FAILURE) == []
    assert events(tenant, action="key.revoke") == []

    after = events(tenant, start_time=timestamp(middle))
    assert [e.target for e in after] == list(reversed(late))
    before = events(tenant, end_time=timestamp(middle))
    assert [e.id for e in before] == ids[2:]
    window = events(tenant, start_time=timestamp(middle), end_time=timestamp(datetime.now(UTC)), page_size=1)
    assert [e.target for e in window] == list(reversed(late))
    details = expect_error(
        partial(events, tenant, start_time=timestamp(middle), end_time=timestamp(middle)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    assert details.fields == ["end_time"]
    details = expect_error(
        partial(events, tenant, page_size=-1), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"
    )
    assert details.fields == ["page_size"]
    token = tenant.audit.ListAuditEvents(
        audit_service_pb2.ListAuditEventsRequest(page_size=1), metadata=tenant.metadata
    ).next_page_token
    details = expect_error(
        partial(
            tenant.audit.ListAuditEvents,
            audit_service_pb2.ListAuditEventsRequest(page_token=token, action="key.create"),
            metadata=tenant.metadata,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    assert details.fields == ["page_token"]


def test_a_tenant_reads_only_its_own_organization(harness: Harness) -> None:
    admin = harness.admin()
    org_a, _, key_a = admin.tenant_admin()
    org_b, account_b, key_b = admin.tenant_admin()
    tenant_a, tenant_b = harness.admin(key_a), harness.admin(key_b)
    tenant_a.create_principal(org_a, USER, "alice")
    b_key = tenant_b.create_key(org_b, account_b, ["admin:users"]).key

    seen_by_a = events(tenant_a)
    assert seen_by_a and {e.org_id for e in seen_by_a} == {org_a}
    assert [e.id for e in events(tenant_a, org_id=org_a)] == [e.id for e in seen_by_a]
    assert events(tenant_a, key_id=b_key.id) == []
    expect_error(partial(events, tenant_a, org_id=org_b), grpc.StatusCode.NOT_FOUND, "NOT_FOUND")
    expect_error(
        partial(events, tenant_a, org_id=harness.platform_org_id), grpc.StatusCode.NOT_FOUND, "NOT_FOUND"
    )
    seen_by_b = events(tenant_b)
    assert {e.org_id for e in seen_by_b} == {org_b} and b_key.id in {e.target for e in seen_by_b}

    # The platform credential reads any organization, and all of them without org_id.
    assert [e.id for e in events(admin, org_id=org_b)] == [e.id for e in seen_by_b]
    assert {org_a, org_b} <= {e.org_id for e in events(admin)}

    # Without read:audit: PERMISSION_DENIED, even for the caller's own organization.
    own_org, _, plain_key = admin.tenant_admin(["admin:apikeys", "admin:users"])
    no_audit = harness.admin(plain_key)
    for org_filter in ("", own_org):
        expect_error(
            partial(events, no_audit, org_id=org_filter),
            grpc.StatusCode.PERMISSION_DENIED,
            "INSUFFICIENT_SCOPE",
        )


def test_a_refused_request_files_only_well_formed_ids_in_its_audit_event(harness: Harness) -> None:
    # A refused request may carry anything where an id belongs. A 66-character organization id
    # once went into the 64-character org_id column, which PostgreSQL refused, losing the event;
    # and a pasted API key went into the audit trail as the target.
    admin = harness.admin()
    _, _, tenant_key = admin.tenant_admin()
    for bad in (tenant_key, "org_" + "x" * 100, "org_\x00"):
        request = principal_service_pb2.CreatePrincipalRequest(
            org_id=bad, kind=principal_service_pb2.PRINCIPAL_KIND_USER, display_name="x"
        )
        expect_error(
            partial(admin.principals.CreatePrincipal, request, metadata=admin.metadata),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
        )
    refused = [e for e in events(admin, action="principal.create") if e.outcome != SUCCESS]
    assert len(refused) == 3
    assert {(e.org_id, e.target) for e in refused} == {(harness.platform_org_id, "")}
    assert tenant_key not in str(events(admin))
