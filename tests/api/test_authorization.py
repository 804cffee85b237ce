"""Caller authentication and authority on admin RPCs: scopes, organization isolation, no escalation."""

from __future__ import annotations

import functools

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2
from google.protobuf.field_mask_pb2 import FieldMask

from identity.services.rules import RULES
from identity.v1 import (
    audit_service_pb2,
    authorization_service_pb2,
    key_service_pb2,
    organization_service_pb2,
    principal_service_pb2,
    token_service_pb2,
)
from tests.conftest import Harness
from tests.helpers import Admin, expect_error

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
DENIED = grpc.StatusCode.PERMISSION_DENIED
NOT_FOUND = grpc.StatusCode.NOT_FOUND


def test_every_rpc_declares_its_auth_requirement() -> None:
    methods = {
        f"/{service.full_name}/{method.name}"
        for module in (
            organization_service_pb2,
            principal_service_pb2,
            key_service_pb2,
            token_service_pb2,
            authorization_service_pb2,
            audit_service_pb2,
        )
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }
    envoy = external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"]
    methods |= {f"/{envoy.full_name}/{method.name}" for method in envoy.methods}
    assert len(methods) >= 31
    assert methods - RULES.keys() == set(), "RPCs without an entry in identity.services.rules.RULES"
    assert RULES.keys() - methods == set(), "rules for RPCs that do not exist"


def test_admin_rpc_without_credential_is_unauthenticated(harness: Harness) -> None:
    anonymous = Admin(harness.channel, "")
    expect_error(
        lambda: anonymous.keys.ListKeys(key_service_pb2.ListKeysRequest(org_id=harness.platform_org_id)),
        UNAUTHENTICATED,
        "MISSING_AUTHORIZATION",
    )


def test_key_without_admin_scope_is_denied(harness: Harness) -> None:
    org_id, _, tenant_key = harness.admin().tenant_admin(scopes=["admin:users", "inventory:read"])
    tenant = harness.admin(tenant_key)
    details = expect_error(
        lambda: tenant.keys.ListKeys(
            key_service_pb2.ListKeysRequest(org_id=org_id), metadata=tenant.metadata
        ),
        DENIED,
        "INSUFFICIENT_SCOPE",
    )
    assert "admin:apikeys" in details.message


def test_organizations_are_isolated(harness: Harness) -> None:
    platform = harness.admin()
    org_a, principal_a, key_a = platform.tenant_admin()
    org_b, principal_b, _ = platform.tenant_admin()
    b_key = platform.create_key(org_b, principal_b, ["inventory:read"]).key
    a = harness.admin(key_a)
    meta = a.metadata

    expect_error(
        lambda: a.keys.GetKey(key_service_pb2.GetKeyRequest(id=b_key.id), metadata=meta),
        NOT_FOUND,
        "NOT_FOUND",
    )
    expect_error(
        lambda: a.keys.ListKeys(key_service_pb2.ListKeysRequest(org_id=org_b), metadata=meta),
        NOT_FOUND,
        "NOT_FOUND",
    )
    expect_error(
        lambda: a.keys.RevokeKey(key_service_pb2.RevokeKeyRequest(key_id=b_key.id), metadata=meta),
        NOT_FOUND,
        "NOT_FOUND",
    )
    expect_error(
        lambda: a.keys.RotateKey(key_service_pb2.RotateKeyRequest(key_id=b_key.id), metadata=meta),
        NOT_FOUND,
        "NOT_FOUND",
    )
    expect_error(
        lambda: a.keys.DeleteKey(key_service_pb2.DeleteKeyRequest(key_id=b_key.id), metadata=meta),
        NOT_FOUND,
        "NOT_FOUND",
    )
    expect_error(
        lambda: a.keys.UpdateKey(
            key_service_pb2.UpdateKeyRequest(
                key=key_service_pb2.Key(id=b_key.id, display_name="mine"),
                update_mask=FieldMask(paths=["display_name"]),
            ),
            metadata=meta,
        ),
        NOT_FOUND,
        "NOT_FOUND",
    )
    expect_error(lambda: a.create_key(org_b, principal_b, ["admin:apikeys"]), NOT_FOUND, "NOT_FOUND")
    # A principal of B cannot be given a key through A's organization either.
    expect_error(lambda: a.create_key(org_a, principal_b, ["admin:apikeys"]), NOT_FOUND, "NOT_FOUND")
    expect_error(
        lambda: a.principals.GetPrincipal(
            principal_service_pb2.GetPrincipalRequest(id=principal_b), metadata=meta
        ),
        NOT_FOUND,
        "NOT_FOUND",
    )
    # B's key is untouched, and A still works inside A.
    assert platform.keys.GetKey(
        key_service_pb2.GetKeyRequest(id=b_key.id), metadata=platform.metadata
    ).key.state == (key_service_pb2.KEY_STATE_ACTIVE)
    own = a.keys.ListKeys(key_service_pb2.ListKeysRequest(org_id=org_a), metadata=meta).keys
    assert {k.principal_id for k in own} == {principal_a}


def test_caller_cannot_grant_scopes_it_lacks(harness: Harness) -> None:
    org_id, _, tenant_key = harness.admin().tenant_admin(scopes=["admin:apikeys", "inventory:*"])
    tenant = harness.admin(tenant_key)
    worker = harness.admin().create_principal(org_id, name="worker").id
    for scopes in (["billing:read"], ["*"], ["inventory:read", "admin:users"], ["inventory:read:own"]):
        details = expect_error(
            functools.partial(tenant.create_key, org_id, worker, scopes), DENIED, "INSUFFICIENT_SCOPE"
        )
        assert "cannot grant" in details.message
    created = tenant.create_key(org_id, worker, ["inventory:read", "inventory:*"])
    assert list(created.key.scopes) == ["inventory:read", "inventory:*"]
    # Widening an existing key is escalation too.
    expect_error(
        lambda: tenant.keys.UpdateKey(
            key_service_pb2.UpdateKeyRequest(
                key=key_service_pb2.Key(id=created.key.id, scopes=["billing:read"]),
                update_mask=FieldMask(paths=["scopes"]),
            ),
            metadata=tenant.metadata,
        ),
        DENIED,
        "INSUFFICIENT_SCOPE",
    )


def test_caller_limited_to_resources_cannot_grant_others(harness: Harness) -> None:
    platform = harness.admin()
    org_id, admin_principal, _ = platform.tenant_admin()
    scoped_admin = platform.create_key(
        org_id, admin_principal, ["admin:apikeys", "site:read"], resources=[("website", "w_1")]
    ).api_key
    tenant = harness.admin(scoped_admin)
    worker = platform.create_principal(org_id, name="worker").id
    expect_error(lambda: tenant.create_key(org_id, worker, ["site:read"]), DENIED, "RESOURCE_FORBIDDEN")
    expect_error(
        lambda: tenant.create_key(org_id, worker, ["site:read"], resources=[("website", "w_2")]),
        DENIED,
        "RESOURCE_FORBIDDEN",
    )
    made = tenant.create_key(org_id, worker, ["site:read"], resources=[("website", "w_1")])
    assert [(r.type, r.id) for r in made.key.resources] == [("website", "w_1")]


def test_ip_allowlist_uses_the_grpc_peer(harness: Harness) -> None:
    platform = harness.admin()
    org_id, principal_id, _ = platform.tenant_admin()
    elsewhere = platform.create_key(
        org_id, principal_id, ["admin:apikeys"], allowed_cidrs=["10.0.0.0/8"]
    ).api_key
    caller = harness.admin(elsewhere)
    spoofed = (*caller.metadata, ("x-forwarded-for", "10.1.2.3"))
    expect_error(
        lambda: caller.keys.ListKeys(key_service_pb2.ListKeysRequest(org_id=org_id), metadata=spoofed),
        DENIED,
        "IP_RESTRICTED",
    )
    second = platform.create_principal(org_id, name="second").id
    loopback = platform.create_key(
        org_id, second, ["admin:apikeys"], allowed_cidrs=["127.0.0.0/8", "::1/128"]
    ).api_key
    allowed = harness.admin(loopback)
    assert allowed.keys.ListKeys(
        key_service_pb2.ListKeysRequest(org_id=org_id), metadata=allowed.metadata
    ).keys


def test_only_platform_creates_organizations(harness: Harness) -> None:
    _, _, tenant_key = harness.admin().tenant_admin(scopes=["admin:organizations"])
    tenant = harness.admin(tenant_key)
    expect_error(lambda: tenant.create_org("Rogue"), DENIED, "INSUFFICIENT_SCOPE")


@pytest.mark.parametrize("header", ["authorization", "x-api-key"])
def test_both_credential_headers_work(harness: Harness, header: str) -> None:
    value = f"Bearer {harness.platform_key}" if header == "authorization" else harness.platform_key
    me = harness.admin().authz.WhoAmI(authorization_service_pb2.WhoAmIRequest(), metadata=((header, value),))
    assert me.principal_id == harness.platform_principal_id and me.credential_type == "api_key"
