"""OrganizationService and PrincipalService over a real server."""

from __future__ import annotations

from functools import partial
from typing import Any

import grpc
from google.protobuf import field_mask_pb2

from identity.v1 import (
    authorization_service_pb2,
    key_service_pb2,
    organization_service_pb2,
    principal_service_pb2,
)
from tests.conftest import Harness
from tests.helpers import Admin, expect_error

USER = principal_service_pb2.PRINCIPAL_KIND_USER
SERVICE_ACCOUNT = principal_service_pb2.PRINCIPAL_KIND_SERVICE_ACCOUNT
ACTIVE_ORG = organization_service_pb2.ORGANIZATION_STATE_ACTIVE
INACTIVE_ORG = organization_service_pb2.ORGANIZATION_STATE_INACTIVE
ACTIVE = principal_service_pb2.PRINCIPAL_STATE_ACTIVE
DISABLED = principal_service_pb2.PRINCIPAL_STATE_DISABLED
DEFAULT_POLICY = (1, 2, 365, 90, True)


def policy_of(org: organization_service_pb2.Organization) -> tuple[int, int, int, int, bool]:
    """An organization's key policy as a tuple."""
    p = org.key_policy
    return (
        p.max_keys_per_user,
        p.max_keys_per_service_account,
        p.max_expiry_days,
        p.default_expiry_days,
        p.require_expiry,
    )


def whoami(harness: Harness, api_key: str) -> authorization_service_pb2.WhoAmIResponse:
    """WhoAmI with ``api_key`` as the caller: a cheap call that only needs a working credential."""
    caller = harness.admin(api_key)
    return caller.authz.WhoAmI(authorization_service_pb2.WhoAmIRequest(), metadata=caller.metadata)


def get_org(admin: Admin, org_id: str) -> organization_service_pb2.Organization:
    """GetOrganization."""
    return admin.orgs.GetOrganization(
        organization_service_pb2.GetOrganizationRequest(id=org_id), metadata=admin.metadata
    ).organization


def update_org(
    admin: Admin, org: organization_service_pb2.Organization, *paths: str
) -> organization_service_pb2.Organization:
    """UpdateOrganization with ``org`` and a mask of ``paths``."""
    request = organization_service_pb2.UpdateOrganizationRequest(
        organization=org, update_mask=field_mask_pb2.FieldMask(paths=list(paths))
    )
    return admin.orgs.UpdateOrganization(request, metadata=admin.metadata).organization


def list_orgs(admin: Admin, page_size: int) -> tuple[list[str], list[int]]:
    """Every organization id the caller sees, page by page, and the size of each page."""
    ids: list[str] = []
    sizes: list[int] = []
    token = ""
    for _ in range(100):
        response = admin.orgs.ListOrganizations(
            organization_service_pb2.ListOrganizationsRequest(page_size=page_size, page_token=token),
            metadata=admin.metadata,
        )
        ids += [o.id for o in response.organizations]
        sizes.append(len(response.organizations))
        token = response.next_page_token
        if not token:
            return ids, sizes
    raise AssertionError("ListOrganizations never returned an empty next_page_token")


def update_principal(
    admin: Admin, principal: principal_service_pb2.Principal, *paths: str
) -> principal_service_pb2.Principal:
    """UpdatePrincipal with ``principal`` and a mask of ``paths``."""
    request = principal_service_pb2.UpdatePrincipalRequest(
        principal=principal, update_mask=field_mask_pb2.FieldMask(paths=list(paths))
    )
    return admin.principals.UpdatePrincipal(request, metadata=admin.metadata).principal


def list_principals(admin: Admin, org_id: str, page_size: int, **filters: Any) -> tuple[list[str], list[int]]:
    """Every principal id of a ListPrincipals query, page by page, and the size of each page."""
    ids: list[str] = []
    sizes: list[int] = []
    token = ""
    for _ in range(100):
        response = admin.principals.ListPrincipals(
            principal_service_pb2.ListPrincipalsRequest(
                org_id=org_id, page_size=page_size, page_token=token, **filters
            ),
            metadata=admin.metadata,
        )
        ids += [p.id for p in response.principals]
        sizes.append(len(response.principals))
        token = response.next_page_token
        if not token:
            return ids, sizes
    raise AssertionError("ListPrincipals never returned an empty next_page_token")


def set_password(admin: Admin, principal_id: str, password: str) -> principal_service_pb2.Principal:
    """SetPrincipalPassword."""
    return admin.principals.SetPrincipalPassword(
        principal_service_pb2.SetPrincipalPasswordRequest(principal_id=principal_id, password=password),
        metadata=admin.metadata,
    ).principal


# Organizations


def test_only_the_platform_credential_creates_organizations(harness: Harness) -> None:
    admin = harness.admin()
    org = admin.create_org("Acme")
    assert org.id.startswith("org_") and org.display_name == "Acme" and org.state == ACTIVE_ORG
    assert policy_of(org) == DEFAULT_POLICY and org.HasField("create_time")
    custom = admin.create_org("Custom", max_keys_per_user=3, max_expiry_days=60, default_expiry_days=30)
    assert policy_of(custom) == (3, 2, 60, 30, True)

    _, _, tenant_key = admin.tenant_admin(["admin:organizations", "admin:apikeys", "admin:users"])
    tenant = harness.admin(tenant_key)
    _, _, plain_key = admin.tenant_admin(["admin:apikeys"])
    for caller in (tenant, harness.admin(plain_key)):
        expect_error(
            partial(caller.create_org, "Mine"), grpc.StatusCode.PERMISSION_DENIED, "INSUFFICIENT_SCOPE"
        )
    expect_error(
        partial(harness.admin("").create_org, "Anon"),
        grpc.StatusCode.UNAUTHENTICATED,
        "MISSING_AUTHORIZATION",
    )
    # Nothing was created by the refused calls.
    names = [get_org(admin, org_id).display_name for org_id in list_orgs(admin, 0)[0]]
    assert "Mine" not in names and "Anon" not in names

    details = expect_error(
        partial(admin.create_org, ""), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"
    )
    assert details.fields == ["display_name"]
    details = expect_error(
        partial(admin.create_org, "Too long", max_expiry_days=400),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    assert details.fields == ["key_policy.max_expiry_days"]
    details = expect_error(
        partial(admin.create_org, "Incoherent", max_expiry_days=30, default_expiry_days=60),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    assert details.fields == ["key_policy.default_expiry_days"]


def test_get_list_and_update_organizations(harness: Harness) -> None:
    admin = harness.admin()
    orgs = [admin.create_org(f"Org {n}") for n in range(3)]
    fetched = get_org(admin, orgs[1].id)
    assert (fetched.id, fetched.display_name, fetched.state) == (orgs[1].id, "Org 1", ACTIVE_ORG)

    everyone = [harness.platform_org_id, *(o.id for o in orgs)]
    assert list_orgs(admin, 0) == (everyone, [4])
    assert list_orgs(admin, 3) == (everyone, [3, 1])
    assert list_orgs(admin, 1) == (everyone, [1, 1, 1, 1])
    details = expect_error(
        partial(list_orgs, admin, -1), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"
    )
    assert details.fields == ["page_size"]

    target = orgs[0].id
    renamed = update_org(
        admin, organization_service_pb2.Organization(id=target, display_name="Renamed"), "display_name"
    )
    assert renamed.display_name == "Renamed" and policy_of(renamed) == DEFAULT_POLICY
    assert get_org(admin, target).display_name == "Renamed"

    # One policy field: the others stay.
    one_field = organization_service_pb2.Organization(
        id=target, display_name="ignored", key_policy=organization_service_pb2.KeyPolicy(max_keys_per_user=5)
    )
    after = update_org(admin, one_field, "key_policy.max_keys_per_user")
    assert policy_of(after) == (5, 2, 365, 90, True) and after.display_name == "Renamed"
    after = update_org(
        admin,
        organization_service_pb2.Organization(
            id=target, key_policy=organization_service_pb2.KeyPolicy(max_keys_per_service_account=7)
        ),
        "key_policy.max_keys_per_service_account",
    )
    assert policy_of(after) == (5, 7, 365, 90, True)
    # The whole policy: fields left unset go back to their defaults.
    whole = organization_service_pb2.Organization(
        id=target,
        key_policy=organization_service_pb2.KeyPolicy(
            max_expiry_days=30, default_expiry_days=10, require_expiry=False
        ),
    )
    after = update_org(admin, whole, "key_policy")
    assert policy_of(after) == (1, 2, 30, 10, False)
    assert policy_of(get_org(admin, target)) == (1, 2, 30, 10, False)

    inactive = update_org(
        admin, organization_service_pb2.Organization(id=target, state=INACTIVE_ORG), "state"
    )
    assert inactive.state == INACTIVE_ORG and get_org(admin, target).state == INACTIVE_ORG
    assert update_org(
        admin, organization_service_pb2.Organization(id=target, state=ACTIVE_ORG), "state"
    ).state == (ACTIVE_ORG)

    for paths in (["id"], ["create_time"], ["key_policy.no_such_field"], []):
        details = expect_error(
            partial(update_org, admin, organization_service_pb2.Organization(id=target), *paths),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
        )
        assert details.fields == ["update_mask"], paths
    details = expect_error(
        partial(update_org, admin, organization_service_pb2.Organization(id=target), "state"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    assert details.fields == ["organization.state"]
    details = expect_error(
        partial(
            update_org,
            admin,
            organization_service_pb2.Organization(
                id=target, key_policy=organization_service_pb2.KeyPolicy(max_keys_per_user=1001)
            ),
            "key_policy.max_keys_per_user",
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    assert details.fields == ["organization.key_policy.max_keys_per_user"]
    # Refused updates changed nothing.
    final = get_org(admin, target)
    assert (final.display_name, final.state, policy_of(final)) == (
        "Renamed",
        ACTIVE_ORG,
        (1, 2, 30, 10, False),
    )

    expect_error(
        partial(get_org, admin, "org_00000000000000000000000000"), grpc.StatusCode.NOT_FOUND, "NOT_FOUND"
    )
    expect_error(
        partial(
            update_org,
            admin,
            organization_service_pb2.Organization(id=harness.platform_org_id, state=INACTIVE_ORG),
            "state",
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "FAILED_PRECONDITION",
    )
    assert get_org(admin, harness.platform_org_id).state == ACTIVE_ORG


def test_a_tenant_sees_only_its_own_organization(harness: Harness) -> None:
    admin = harness.admin()
    org_id, _, key = admin.tenant_admin(["admin:organizations"])
    other = admin.create_org("Other")
    tenant = harness.admin(key)

    assert list_orgs(tenant, 0) == ([org_id], [1])
    assert list_orgs(tenant, 1) == ([org_id], [1])
    assert get_org(tenant, org_id).id == org_id
    renamed = update_org(
        tenant, organization_service_pb2.Organization(id=org_id, display_name="Ours"), "display_name"
    )
    assert renamed.display_name == "Ours"

    for org in (other.id, harness.platform_org_id):
        expect_error(partial(get_org, tenant, org), grpc.StatusCode.NOT_FOUND, "NOT_FOUND")
        expect_error(
            partial(
                update_org,
                tenant,
                organization_service_pb2.Organization(id=org, display_name="Hijacked"),
                "display_name",
            ),
            grpc.StatusCode.NOT_FOUND,
            "NOT_FOUND",
        )
    assert get_org(admin, other.id).display_name == "Other"

    # Without admin:organizations a tenant cannot even read its own organization.
    _, _, keys_only = admin.tenant_admin(["admin:apikeys"])
    expect_error(
        partial(list_orgs, harness.admin(keys_only), 0),
        grpc.StatusCode.PERMISSION_DENIED,
        "INSUFFICIENT_SCOPE",
    )


def test_an_inactive_organization_stops_its_keys(harness: Harness) -> None:
    admin = harness.admin()
    org_id, account_id, key = admin.tenant_admin()
    tenant = harness.admin(key)
    assert whoami(harness, key).org_id == org_id
    assert tenant.create_principal(org_id, USER, "alice").org_id == org_id

    update_org(admin, organization_service_pb2.Organization(id=org_id, state=INACTIVE_ORG), "state")
    expect_error(partial(whoami, harness, key), grpc.StatusCode.PERMISSION_DENIED, "INACTIVE_ORGANIZATION")
    expect_error(
        partial(tenant.create_principal, org_id, USER, "bob"),
        grpc.StatusCode.PERMISSION_DENIED,
        "INACTIVE_ORGANIZATION",
    )
    # The platform cannot issue keys in an inactive organization either.
    expect_error(
        partial(admin.create_key, org_id, account_id, ["a:read"]),
        grpc.StatusCode.FAILED_PRECONDITION,
        "FAILED_PRECONDITION",
    )
    # Other organizations are untouched.
    _, _, other_key = admin.tenant_admin()
    assert whoami(harness, other_key).key_id

    update_org(admin, organization_service_pb2.Organization(id=org_id, state=ACTIVE_ORG), "state")
    assert whoami(harness, key).org_id == org_id


# Principals


def test_create_get_list_and_update_principals(harness: Harness) -> None:
    admin = harness.admin()
    org_id, admin_account, key = admin.tenant_admin()
    tenant = harness.admin(key)
    alice = tenant.create_principal(org_id, USER, "alice")
    bob = tenant.create_principal(org_id, USER, "bob")
    robot = tenant.create_principal(org_id, SERVICE_ACCOUNT, "robot")
    assert alice.id.startswith("usr_") and robot.id.startswith("sa_")
    assert (alice.org_id, alice.kind, alice.display_name, alice.state) == (org_id, USER, "alice", ACTIVE)
    assert not robot.has_password and alice.HasField("create_time")

    got = tenant.principals.GetPrincipal(
        principal_service_pb2.GetPrincipalRequest(id=robot.id), metadata=tenant.metadata
    ).principal
    assert (got.id, got.kind, got.display_name, got.org_id) == (robot.id, SERVICE_ACCOUNT, "robot", org_id)

    everyone = [admin_account, alice.id, bob.id, robot.id]
    assert list_principals(tenant, org_id, 0) == (everyone, [4])
    assert list_principals(tenant, org_id, 3) == (everyone, [3, 1])
    assert list_principals(tenant, org_id, 1, kind=USER) == ([alice.id, bob.id], [1, 1])
    assert list_principals(tenant, org_id, 0, kind=SERVICE_ACCOUNT)[0] == [admin_account, robot.id]

    renamed = update_principal(
        tenant,
        principal_service_pb2.Principal(id=bob.id, display_name="Robert", state=DISABLED),
        "display_name",
    )
    assert (renamed.display_name, renamed.state, renamed.kind) == ("Robert", ACTIVE, USER)
    disabled = update_principal(tenant, principal_service_pb2.Principal(id=bob.id, state=DISABLED), "state")
    assert (disabled.display_name, disabled.state) == ("Robert", DISABLED)
    assert list_principals(tenant, org_id, 0, state=DISABLED)[0] == [bob.id]
    assert list_principals(tenant, org_id, 1, state=ACTIVE)[0] == [admin_account, alice.id, robot.id]
    assert list_principals(tenant, org_id, 0, kind=USER, state=ACTIVE)[0] == [alice.id]

    for paths in (["kind"], ["org_id"], ["has_password"], []):
        details = expect_error(
            partial(
                update_principal,
                tenant,
                principal_service_pb2.Principal(id=alice.id, kind=SERVICE_ACCOUNT),
                *paths,
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
        )
        assert details.fields == ["update_mask"], paths
    details = expect_error(
        partial(update_principal, tenant, principal_service_pb2.Principal(id=alice.id), "display_name"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    assert details.fields == ["principal.display_name"]
    details = expect_error(
        partial(tenant.create_principal, org_id, principal_service_pb2.PRINCIPAL_KIND_UNSPECIFIED, "x"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    assert details.fields == ["kind"]
    details = expect_error(
        partial(list_principals, tenant, org_id, -5), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"
    )
    assert details.fields == ["page_size"]
    assert list_principals(tenant, org_id, 0)[0] == everyone

    # Another organization's principals are invisible to the tenant.
    other = admin.create_org("Other")
    stranger = admin.create_principal(other.id, USER, "mallory")
    expect_error(
        partial(
            tenant.principals.GetPrincipal,
            principal_service_pb2.GetPrincipalRequest(id=stranger.id),
            metadata=tenant.metadata,
        ),
        grpc.StatusCode.NOT_FOUND,
        "NOT_FOUND",
    )
    expect_error(
        partial(
            update_principal, tenant, principal_service_pb2.Principal(id=stranger.id, state=DISABLED), "state"
        ),
        grpc.StatusCode.NOT_FOUND,
        "NOT_FOUND",
    )
    expect_error(partial(list_principals, tenant, other.id, 0), grpc.StatusCode.NOT_FOUND, "NOT_FOUND")
    expect_error(
        partial(tenant.create_principal, other.id, USER, "intruder"), grpc.StatusCode.NOT_FOUND, "NOT_FOUND"
    )
    assert list_principals(admin, other.id, 0)[0] == [stranger.id]


def test_a_disabled_principal_stops_its_keys(harness: Harness) -> None:
    admin = harness.admin()
    org_id, _, tenant_key = admin.tenant_admin()
    tenant = harness.admin(tenant_key)
    robot = tenant.create_principal(org_id, SERVICE_ACCOUNT, "robot")
    robot_key = tenant.create_key(org_id, robot.id, ["admin:apikeys"]).api_key
    assert whoami(harness, robot_key).principal_id == robot.id

    update_principal(tenant, principal_service_pb2.Principal(id=robot.id, state=DISABLED), "state")
    expect_error(partial(whoami, harness, robot_key), grpc.StatusCode.PERMISSION_DENIED, "DISABLED_PRINCIPAL")
    robot_caller = harness.admin(robot_key)
    expect_error(
        partial(
            robot_caller.keys.ListKeys,
            key_service_pb2.ListKeysRequest(org_id=org_id),
            metadata=robot_caller.metadata,
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "DISABLED_PRINCIPAL",
    )
    # No new key for a disabled principal; the tenant's own key still works.
    expect_error(
        partial(tenant.create_key, org_id, robot.id, ["admin:apikeys"]),
        grpc.StatusCode.FAILED_PRECONDITION,
        "FAILED_PRECONDITION",
    )
    assert whoami(harness, tenant_key).org_id == org_id

    update_principal(tenant, principal_service_pb2.Principal(id=robot.id, state=ACTIVE), "state")
    assert whoami(harness, robot_key).principal_id == robot.id


def test_set_principal_password(harness: Harness) -> None:
    admin = harness.admin()
    org_id, _, key = admin.tenant_admin()
    tenant = harness.admin(key)
    robot = tenant.create_principal(org_id, SERVICE_ACCOUNT, "robot")
    alice = tenant.create_principal(org_id, USER, "alice")
    password = "correct horse battery staple"

    updated = set_password(tenant, robot.id, password)
    assert updated.id == robot.id and updated.has_password and password not in str(updated)
    got = tenant.principals.GetPrincipal(
        principal_service_pb2.GetPrincipalRequest(id=robot.id), metadata=tenant.metadata
    ).principal
    assert got.has_password

    expect_error(
        partial(set_password, tenant, alice.id, password),
        grpc.StatusCode.FAILED_PRECONDITION,
        "FAILED_PRECONDITION",
    )
    other = tenant.create_principal(org_id, SERVICE_ACCOUNT, "other")
    for bad in ("short", "x" * 15, "x" * 257):
        details = expect_error(
            partial(set_password, tenant, other.id, bad), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"
        )
        assert details.fields == ["password"]
    listed = {
        p.id: p.has_password
        for p in tenant.principals.ListPrincipals(
            principal_service_pb2.ListPrincipalsRequest(org_id=org_id), metadata=tenant.metadata
        ).principals
    }
    assert listed[robot.id] and not listed[other.id] and not listed[alice.id]
    assert set_password(tenant, other.id, "y" * 16).has_password
