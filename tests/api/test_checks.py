"""Check, BatchCheck and Envoy's ext_authz, through the real server: every reason, in order."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import grpc
import pytest
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2, external_auth_pb2_grpc
from google.protobuf.field_mask_pb2 import FieldMask

from identity.crypto import apikeys
from identity.domain.model import KeyKind
from identity.v1 import (
    audit_service_pb2,
    authorization_service_pb2_grpc,
    common_pb2,
    key_service_pb2,
    organization_service_pb2,
    principal_service_pb2,
    token_service_pb2,
    token_service_pb2_grpc,
)
from identity.v1 import (
    authorization_service_pb2 as authz,
)
from tests.conftest import Harness
from tests.helpers import expect_error, mistyped

R = common_pb2


class World:
    """One organization with keys shaped for every reason."""

    def __init__(self, harness: Harness) -> None:
        self.harness = harness
        self.admin = harness.admin()
        self.org_id = self.admin.create_org("Checks Inc", max_keys_per_service_account=20).id
        self.principal_id = self.admin.create_principal(self.org_id).id
        self.checks = authorization_service_pb2_grpc.AuthorizationServiceStub(harness.channel)
        self.tokens = token_service_pb2_grpc.TokenServiceStub(harness.channel)

    def key(self, scopes: list[str], **fields: Any) -> str:
        return self.admin.create_key(self.org_id, self.principal_id, scopes, **fields).api_key

    def check(
        self, credential: str, permissions: list[str], resource: tuple[str, str] | None = None, ip: str = ""
    ) -> authz.CheckResponse:
        request = authz.CheckRequest(credential=credential, permissions=permissions, client_ip=ip)
        if resource:
            request.resource.CopyFrom(R.ResourceRef(type=resource[0], id=resource[1]))
        return self.checks.Check(request)

    def token(self, api_key: str) -> str:
        return self.tokens.ExchangeApiKey(
            token_service_pb2.ExchangeApiKeyRequest(api_key=api_key)
        ).access_token


@pytest.fixture
def world(harness: Harness) -> World:
    return World(harness)


def test_allowed_decision_carries_the_subject(world: World) -> None:
    key = world.key(["inventory:*", "rate:premium"], resources=[("website", "w_1")])
    for credential in (key, world.token(key)):
        reply = world.check(credential, ["inventory:read"], ("website", "w_1"))
        assert reply.allowed and reply.reason == R.DECISION_REASON_ALLOWED
        assert reply.org_id == world.org_id and reply.principal_id == world.principal_id and reply.key_id
        assert list(reply.granted_scopes) == ["inventory:*", "rate:premium"]
        assert reply.rate_tier == authz.RATE_TIER_PREMIUM and reply.HasField("credential_expire_time")


def test_every_reason(world: World) -> None:
    good = world.key(["inventory:read"])
    scoped = world.key(["site:read"], resources=[("website", "w_1")])
    restricted = world.key(["inventory:read"], allowed_cidrs=["10.0.0.0/8"])
    revoked_key = world.admin.create_key(world.org_id, world.principal_id, ["inventory:read"])
    world.admin.keys.RevokeKey(
        key_service_pb2.RevokeKeyRequest(key_id=revoked_key.key.id), metadata=world.admin.metadata
    )
    cases: list[tuple[str, str, list[str], tuple[str, str] | None, str, int]] = [
        ("missing", "", ["inventory:read"], None, "", R.DECISION_REASON_MISSING_AUTHORIZATION),
        ("malformed", "idk_live_nope", ["inventory:read"], None, "", R.DECISION_REASON_INVALID_API_KEY),
        (
            "wrong secret",
            mistyped(good),
            [],
            None,
            "",
            R.DECISION_REASON_INVALID_API_KEY,
        ),
        ("bad token", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", [], None, "", R.DECISION_REASON_INVALID_TOKEN),
        ("revoked", revoked_key.api_key, ["inventory:read"], None, "", R.DECISION_REASON_REVOKED_API_KEY),
        ("ip", restricted, ["inventory:read"], None, "192.168.1.1", R.DECISION_REASON_IP_RESTRICTED),
        ("ip missing", restricted, ["inventory:read"], None, "", R.DECISION_REASON_IP_RESTRICTED),
        ("scope", good, ["inventory:write"], None, "", R.DECISION_REASON_INSUFFICIENT_SCOPE),
        ("wildcard request", good, ["inventory:*"], None, "", R.DECISION_REASON_INSUFFICIENT_SCOPE),
        ("resource", scoped, ["site:read"], ("website", "w_2"), "", R.DECISION_REASON_RESOURCE_FORBIDDEN),
        (
            "ip ok (v4-mapped v6)",
            restricted,
            ["inventory:read"],
            None,
            "::ffff:10.1.2.3",
            R.DECISION_REASON_ALLOWED,
        ),
    ]
    for name, credential, permissions, resource, ip, reason in cases:
        reply = world.check(credential, permissions, resource, ip)
        assert reply.reason == reason, (name, reply)
        assert reply.allowed == (reason == R.DECISION_REASON_ALLOWED), name
        assert credential[-12:] not in reply.message or not credential, name
    missing = world.check(good, ["inventory:read", "billing:read", "inventory:write"])
    assert list(missing.missing_permissions) == ["billing:read", "inventory:write"]


def test_ordering_conflicts(world: World) -> None:
    """The earlier rule wins: IP before scope, scope before resource, disabled before IP, inactive before disabled."""
    both = world.key(["site:read"], resources=[("website", "w_1")], allowed_cidrs=["10.0.0.0/8"])
    assert (
        world.check(both, ["billing:read"], ("website", "w_9"), "192.168.0.1").reason
        == R.DECISION_REASON_IP_RESTRICTED
    )
    assert (
        world.check(both, ["billing:read"], ("website", "w_9"), "10.0.0.1").reason
        == R.DECISION_REASON_INSUFFICIENT_SCOPE
    )
    world.admin.principals.UpdatePrincipal(
        principal_service_pb2.UpdatePrincipalRequest(
            principal=principal_service_pb2.Principal(
                id=world.principal_id, state=principal_service_pb2.PRINCIPAL_STATE_DISABLED
            ),
            update_mask=FieldMask(paths=["state"]),
        ),
        metadata=world.admin.metadata,
    )
    assert (
        world.check(both, ["billing:read"], None, "192.168.0.1").reason
        == R.DECISION_REASON_DISABLED_PRINCIPAL
    )
    world.admin.orgs.UpdateOrganization(
        organization_service_pb2.UpdateOrganizationRequest(
            organization=organization_service_pb2.Organization(
                id=world.org_id, state=organization_service_pb2.ORGANIZATION_STATE_INACTIVE
            ),
            update_mask=FieldMask(paths=["state"]),
        ),
        metadata=world.admin.metadata,
    )
    assert (
        world.check(both, ["billing:read"], None, "192.168.0.1").reason
        == R.DECISION_REASON_INACTIVE_ORGANIZATION
    )


def test_token_of_a_revoked_key_is_invalid_at_once(world: World) -> None:
    created = world.admin.create_key(world.org_id, world.principal_id, ["inventory:read"])
    token = world.token(created.api_key)
    assert world.check(token, ["inventory:read"]).allowed
    world.admin.keys.RevokeKey(
        key_service_pb2.RevokeKeyRequest(key_id=created.key.id), metadata=world.admin.metadata
    )
    assert world.check(token, ["inventory:read"]).reason == R.DECISION_REASON_INVALID_TOKEN


def test_batch_check_resolves_once_and_answers_in_order(world: World) -> None:
    key = world.key(["inventory:read", "site:*"], resources=[("website", "w_1")])
    request = authz.BatchCheckRequest(
        credential=key,
        items=[
            authz.BatchCheckItem(permissions=["inventory:read"]),
            authz.BatchCheckItem(permissions=["inventory:write"]),
            authz.BatchCheckItem(permissions=["site:edit"], resource=R.ResourceRef(type="website", id="w_2")),
        ],
    )
    results = world.checks.BatchCheck(request).results
    assert [r.reason for r in results] == [
        R.DECISION_REASON_ALLOWED,
        R.DECISION_REASON_INSUFFICIENT_SCOPE,
        R.DECISION_REASON_RESOURCE_FORBIDDEN,
    ]
    too_many = authz.BatchCheckRequest(credential=key, items=[authz.BatchCheckItem()] * 101)
    assert expect_error(
        lambda: world.checks.BatchCheck(too_many), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"
    ).fields == ["items"]


def test_bad_check_input_is_invalid_argument(world: World) -> None:
    key = world.key(["inventory:read"])
    details = expect_error(
        lambda: world.check(key, ["Inventory:Read"]), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"
    )
    assert details.fields == ["permissions[0]"]
    details = expect_error(
        lambda: world.check(key, ["inventory:read"], ip="not-an-ip"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    assert details.fields == ["client_ip"]


def envoy_request(
    headers: dict[str, str], extensions: dict[str, str], source: str = "10.0.0.7"
) -> external_auth_pb2.CheckRequest:
    attributes = attribute_context_pb2.AttributeContext(
        request=attribute_context_pb2.AttributeContext.Request(
            http=attribute_context_pb2.AttributeContext.HttpRequest(
                method="GET", path="/v1/items", headers=headers
            )
        ),
        context_extensions=extensions,
    )
    attributes.source.address.socket_address.address = source
    return external_auth_pb2.CheckRequest(attributes=attributes)


def test_envoy_allows_and_rewrites_headers(world: World) -> None:
    envoy = external_auth_pb2_grpc.AuthorizationStub(world.harness.channel)
    key = world.key(["inventory:read"], resources=[("store", "s_1")])
    reply = envoy.Check(
        envoy_request(
            {"x-api-key": key, "user-agent": "curl"},
            {"permission": "inventory:read", "resource_type": "store", "resource_id": "s_1"},
        )
    )
    assert reply.status.code == 0 and reply.HasField("ok_response")
    added = {h.header.key: h.header.value for h in reply.ok_response.headers}
    assert added["x-identity-org"] == world.org_id and added["x-identity-principal"] == world.principal_id
    assert added["x-identity-key"].startswith("key_")
    assert "x-api-key" in reply.ok_response.headers_to_remove
    token = world.token(key)
    by_token = envoy.Check(
        envoy_request({"authorization": f"Bearer {token}"}, {"permission": "inventory:read"})
    )
    assert by_token.status.code == 0 and "authorization" not in by_token.ok_response.headers_to_remove


def test_an_envoy_route_without_a_permission_only_authenticates(world: World) -> None:
    envoy = external_auth_pb2_grpc.AuthorizationStub(world.harness.channel)
    key = world.key(["inventory:read"], allowed_cidrs=["10.0.0.0/8"])
    assert envoy.Check(envoy_request({"x-api-key": key}, {})).status.code == 0
    elsewhere = envoy.Check(envoy_request({"x-api-key": key}, {}, source="192.0.2.1"))
    assert (
        elsewhere.status.code == 7 and json.loads(elsewhere.denied_response.body)["code"] == "IP_RESTRICTED"
    )
    unknown = envoy.Check(envoy_request({"x-api-key": "idk_live_bad"}, {}))
    assert json.loads(unknown.denied_response.body)["code"] == "INVALID_API_KEY"


@pytest.mark.parametrize(
    ("case", "http", "code"),
    [
        ("no credential", 401, "MISSING_AUTHORIZATION"),
        ("bad key", 401, "INVALID_API_KEY"),
        ("scope", 403, "INSUFFICIENT_SCOPE"),
        ("resource", 403, "RESOURCE_FORBIDDEN"),
        ("ip", 403, "IP_RESTRICTED"),
    ],
)
def test_envoy_denials(world: World, case: str, http: int, code: str) -> None:
    envoy = external_auth_pb2_grpc.AuthorizationStub(world.harness.channel)
    key = world.key(["inventory:read"], resources=[("store", "s_1")], allowed_cidrs=["10.0.0.0/8"])
    headers = {"no credential": {}, "bad key": {"x-api-key": "idk_live_bad"}}.get(case, {"x-api-key": key})
    extensions = {
        "permission": "billing:read" if case == "scope" else "inventory:read",
        "resource_type": "store",
    }
    extensions["resource_id"] = "s_2" if case == "resource" else "s_1"
    reply = envoy.Check(envoy_request(headers, extensions, "192.168.0.1" if case == "ip" else "10.0.0.7"))
    assert reply.HasField("denied_response") and reply.denied_response.status.code == http
    assert reply.status.code == (16 if http == 401 else 7)
    body = json.loads(reply.denied_response.body)
    assert body["success"] is False and body["code"] == code and body["error"]
    assert key not in reply.denied_response.body


def test_decisions_are_audited_off_the_request_path_and_keys_marked_used(world: World) -> None:
    from identity.v1 import audit_service_pb2

    created = world.admin.create_key(world.org_id, world.principal_id, ["inventory:read"])
    assert world.check(created.api_key, ["inventory:read"]).allowed
    assert not world.check(created.api_key, ["billing:read"]).allowed
    world.harness.server.writer.flush()  # what the writer thread does every second, and on shutdown
    events = world.admin.audit.ListAuditEvents(
        audit_service_pb2.ListAuditEventsRequest(org_id=world.org_id, action="authz.check"),
        metadata=world.admin.metadata,
    ).events
    assert len(events) == 1, "allows are not audited by default"
    denied = events[0]
    assert denied.outcome == audit_service_pb2.AUDIT_OUTCOME_DENIED and denied.reason == "INSUFFICIENT_SCOPE"
    assert denied.details["required"] == "billing:read" and denied.details["granted"] == "inventory:read"
    assert denied.actor_key_id == created.key.id and created.api_key not in str(denied)
    key = world.admin.keys.GetKey(
        key_service_pb2.GetKeyRequest(id=created.key.id), metadata=world.admin.metadata
    ).key
    assert key.HasField("last_used_time") and key.last_used_time.seconds >= key.create_time.seconds


def test_shutdown_flushes_queued_audit_events(world: World) -> None:
    from sqlalchemy import text

    assert not world.check("idk_live_nonsense", ["inventory:read"]).allowed
    world.harness.server.stop(1)
    with world.harness.db.engine.connect() as connection:
        reasons = [
            row[0]
            for row in connection.execute(
                text("SELECT reason FROM audit_events WHERE action = 'authz.check'")
            )
        ]
    assert reasons == ["INVALID_API_KEY"]


def test_expired_key_and_revoked_before_inactive_organization(world: World) -> None:
    from sqlalchemy import text

    expired = world.admin.create_key(world.org_id, world.principal_id, ["inventory:read"])
    revoked = world.admin.create_key(world.org_id, world.principal_id, ["inventory:read"])
    # No API makes a key that is already past its expiry: move it there in the database.
    with world.harness.db.engine.begin() as connection:
        connection.execute(
            text("UPDATE api_keys SET expire_time = :past WHERE id = :id"),
            {"past": datetime(2020, 1, 1), "id": expired.key.id},
        )
    assert world.check(expired.api_key, ["inventory:read"]).reason == R.DECISION_REASON_EXPIRED_API_KEY
    world.admin.keys.RevokeKey(
        key_service_pb2.RevokeKeyRequest(key_id=revoked.key.id), metadata=world.admin.metadata
    )
    world.admin.orgs.UpdateOrganization(
        organization_service_pb2.UpdateOrganizationRequest(
            organization=organization_service_pb2.Organization(
                id=world.org_id, state=organization_service_pb2.ORGANIZATION_STATE_INACTIVE
            ),
            update_mask=FieldMask(paths=["state"]),
        ),
        metadata=world.admin.metadata,
    )
    assert world.check(revoked.api_key, ["inventory:read"]).reason == R.DECISION_REASON_REVOKED_API_KEY
    assert world.check(expired.api_key, ["inventory:read"]).reason == R.DECISION_REASON_EXPIRED_API_KEY


@pytest.mark.settings(failed_attempts_per_peer=2)
def test_envoy_answers_a_throttled_client_429(world: World) -> None:
    envoy = external_auth_pb2_grpc.AuthorizationStub(world.harness.channel)
    codes = []
    for _ in range(3):  # well-formed keys nobody holds, from one client address
        guess = apikeys.generate(KeyKind.SECRET, "live").plaintext
        reply = envoy.Check(envoy_request({"x-api-key": guess}, {"permission": "inventory:read"}, "10.1.1.2"))
        codes.append((reply.denied_response.status.code, json.loads(reply.denied_response.body)["code"]))
    assert codes == [(401, "INVALID_API_KEY"), (401, "INVALID_API_KEY"), (429, "RATE_LIMITED")]


@pytest.mark.settings(failed_attempts_per_key=1)
def test_a_batch_check_without_items_is_invalid_argument_naming_items(world: World) -> None:
    key = world.key(["inventory:read"])
    token = world.token(key)  # the key is now known to this process, throttled handle or not
    parsed = apikeys.parse(key)
    assert parsed is not None
    wrong = apikeys.generate(parsed.kind, parsed.environment, parsed.lookup).plaintext
    assert world.check(wrong, ["inventory:read"]).reason == R.DECISION_REASON_INVALID_API_KEY
    # A valid credential, a wrong one, and one whose lookup handle is now throttled: all alike.
    for credential in (key, token, wrong, "", "nonsense"):
        details = expect_error(
            lambda credential=credential: world.checks.BatchCheck(
                authz.BatchCheckRequest(credential=credential)
            ),  # type: ignore[misc]
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
        )
        assert details.fields == ["items"], details
    reply = world.checks.BatchCheck(
        authz.BatchCheckRequest(credential=key, items=[authz.BatchCheckItem(permissions=["inventory:read"])])
    )
    assert [r.allowed for r in reply.results] == [True]


def test_client_chosen_audit_text_with_a_nul_or_too_long_loses_no_audit_event(world: World) -> None:
    # PostgreSQL text holds no NUL and target is 64 characters: such a user agent (Envoy's Check
    # takes it from the request body) once failed the background writer's batch at every flush,
    # so no later denial was audited; such a target lost the refused action's audit event.
    envoy = external_auth_pb2_grpc.AuthorizationStub(world.harness.channel)
    key = world.key(["inventory:read"])
    headers = {"x-api-key": key, "user-agent": "evil\x00agent"}
    assert envoy.Check(envoy_request(headers, {"permission": "billing:read"})).status.code == 7
    assert not world.check(key, ["billing:write"]).allowed
    org_id, _, tenant_key = world.admin.tenant_admin(["read:audit"])
    tenant = world.harness.admin(tenant_key)
    for key_id in ("key_\x00evil", "key_" + "x" * 100):
        request = key_service_pb2.RevokeKeyRequest(key_id=key_id)
        expect_error(
            lambda r=request: tenant.keys.RevokeKey(r, metadata=tenant.metadata),  # type: ignore[misc]
            grpc.StatusCode.PERMISSION_DENIED,
            "INSUFFICIENT_SCOPE",
        )
    world.harness.server.writer.flush()  # what the writer thread does every second, and on shutdown

    def audited(org: str, action: str) -> list[audit_service_pb2.AuditEvent]:
        request = audit_service_pb2.ListAuditEventsRequest(org_id=org, action=action)
        return list(world.admin.audit.ListAuditEvents(request, metadata=world.admin.metadata).events)

    checks = audited(world.org_id, "authz.check")
    assert sorted(e.details["required"] for e in checks) == ["billing:read", "billing:write"]
    assert "evil\ufffdagent" in [e.user_agent for e in checks]
    revokes = audited(org_id, "key.revoke")
    assert [e.target for e in revokes] == ["", ""]  # not ids: not kept (see test_audit)
