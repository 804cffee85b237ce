"""Bad input gets INVALID_ARGUMENT naming the field and changes nothing; bad credentials say nothing."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import insert

from identity.crypto import apikeys
from identity.domain.model import KeyKind
from identity.domain.paging import encode_token
from identity.ids import new_id
from identity.store.models import PrincipalRow
from identity.v1 import (
    audit_service_pb2,
    authorization_service_pb2,
    common_pb2,
    key_service_pb2,
    organization_service_pb2,
    principal_service_pb2,
)
from tests.conftest import Harness
from tests.helpers import Admin, expect_error, mistyped, table_rows

INVALID = grpc.StatusCode.INVALID_ARGUMENT


@dataclass
class World:
    """A platform admin, one organization with a service account, and one key of it."""

    harness: Harness
    admin: Admin
    org_id: str
    principal_id: str
    key: key_service_pb2.Key
    api_key: str

    @property
    def md(self) -> tuple[tuple[str, str], ...]:
        return self.admin.metadata


@pytest.fixture
def world(harness: Harness) -> World:
    admin = harness.admin()
    org = admin.create_org()
    account = admin.create_principal(org.id)
    created = admin.create_key(org.id, account.id, ["inventory:read"])
    return World(harness, admin, org.id, account.id, created.key, created.api_key)


def refused(world: World, call: Callable[[], Any], field: str, case: object = "") -> None:
    """``call`` fails INVALID_ARGUMENT naming exactly ``field``, and no business row changes."""
    before = table_rows(world.harness.db.engine)
    try:
        details = expect_error(call, INVALID, "INVALID_ARGUMENT")
    except AssertionError as error:
        raise AssertionError(f"case {case!r}: {error}") from None
    assert details.fields == [field], (case, details)
    assert table_rows(world.harness.db.engine) == before, case


def stamp(delta: timedelta) -> Timestamp:
    result = Timestamp()
    result.FromDatetime(datetime.now(UTC) + delta)
    return result


def duration(delta: timedelta) -> Duration:
    result = Duration()
    result.FromTimedelta(delta)
    return result


def ref(type_: str, id_: str) -> common_pb2.ResourceRef:
    return common_pb2.ResourceRef(type=type_, id=id_)


# --- CreateKey ---------------------------------------------------------------------------------


def create_request(world: World, **fields: Any) -> key_service_pb2.CreateKeyRequest:
    values: dict[str, Any] = {
        "org_id": world.org_id,
        "principal_id": world.principal_id,
        "display_name": "second key",
        "scopes": ["inventory:read"],
    }
    values.update(fields)
    return key_service_pb2.CreateKeyRequest(**values)


def test_the_baseline_create_request_is_accepted(world: World) -> None:
    # Every refused request below differs from this one in the one field it names.
    created = world.admin.keys.CreateKey(create_request(world), metadata=world.md)
    assert created.api_key and created.key.scopes == ["inventory:read"]


BAD_SCOPES = [
    "Read:All",
    "inventory:Read",
    "a::b",
    "inventory:*:read",
    "a:",
    ":a",
    "a:b:",
    "",
    ":",
    "*x",
    "x*",
    "inventory:*x",
    "**",
    "*:read",
    "inventöry:read",
    "\uff49nventory:read",
    "inventory:read\u200b",
    "inventory read",
    "inventory:read\n",
    "inventory/read",
    "a" * 129,
    "rate:gold",
    "rate:*",
]


def test_create_key_refuses_a_malformed_scope(world: World) -> None:
    for scope in BAD_SCOPES:
        request = create_request(world, scopes=[scope])
        refused(world, partial(world.admin.keys.CreateKey, request, metadata=world.md), "scopes[0]", scope)


def test_create_key_names_the_index_of_the_malformed_scope(world: World) -> None:
    request = create_request(world, scopes=["inventory:read", "billing:read", "Billing:Write"])
    refused(world, lambda: world.admin.keys.CreateKey(request, metadata=world.md), "scopes[2]")


def test_a_scope_of_exactly_128_characters_is_accepted(world: World) -> None:
    scope = "a" * 128
    created = world.admin.keys.CreateKey(create_request(world, scopes=[scope]), metadata=world.md)
    assert list(created.key.scopes) == [scope]


def test_create_key_refuses_more_than_50_scopes(world: World) -> None:
    request = create_request(world, scopes=[f"s{i}:read" for i in range(51)])
    refused(world, lambda: world.admin.keys.CreateKey(request, metadata=world.md), "scopes")


def test_create_key_accepts_50_scopes(world: World) -> None:
    scopes = [f"s{i}:read" for i in range(50)]
    created = world.admin.keys.CreateKey(create_request(world, scopes=scopes), metadata=world.md)
    assert list(created.key.scopes) == scopes


CREATE_CASES: list[tuple[str, Callable[[], dict[str, Any]], str]] = [
    ("no scopes", lambda: {"scopes": []}, "scopes"),
    ("duplicate scopes", lambda: {"scopes": ["a:b", "a:b"]}, "scopes"),
    ("ttl_days -1", lambda: {"ttl_days": -1}, "ttl_days"),
    ("ttl_days 366", lambda: {"ttl_days": 366}, "ttl_days"),
    (
        "ttl_days and expire_time",
        lambda: {"ttl_days": 5, "expire_time": stamp(timedelta(days=5))},
        "ttl_days",
    ),
    ("expire_time in 23 h", lambda: {"expire_time": stamp(timedelta(hours=23))}, "expire_time"),
    ("expire_time in 1 min", lambda: {"expire_time": stamp(timedelta(minutes=1))}, "expire_time"),
    ("expire_time past", lambda: {"expire_time": stamp(-timedelta(days=2))}, "expire_time"),
    ("expire_time in 366 days", lambda: {"expire_time": stamp(timedelta(days=366))}, "expire_time"),
    ("display_name 201", lambda: {"display_name": "n" * 201}, "display_name"),
    ("display_name empty", lambda: {"display_name": ""}, "display_name"),
    ("display_name blank", lambda: {"display_name": "   "}, "display_name"),
    ("display_name NUL", lambda: {"display_name": "evil\x00name"}, "display_name"),
    ("description 1001", lambda: {"description": "d" * 1001}, "description"),
    ("cidr host bits", lambda: {"allowed_cidrs": ["10.0.0.1/8"]}, "allowed_cidrs[0]"),
    ("cidr nonsense", lambda: {"allowed_cidrs": ["nonsense"]}, "allowed_cidrs[0]"),
    ("cidr v6 host bits", lambda: {"allowed_cidrs": ["10.0.0.0/8", "2001:db8::1/32"]}, "allowed_cidrs[1]"),
    ("cidr prefix too long", lambda: {"allowed_cidrs": ["10.0.0.0/33"]}, "allowed_cidrs[0]"),
    ("cidr empty", lambda: {"allowed_cidrs": [""]}, "allowed_cidrs[0]"),
    ("cidr with a zone", lambda: {"allowed_cidrs": ["fe80::%eth0/64"]}, "allowed_cidrs[0]"),
    ("cidr ipv4-mapped", lambda: {"allowed_cidrs": ["::ffff:10.0.0.0/104"]}, "allowed_cidrs[0]"),
    ("51 cidrs", lambda: {"allowed_cidrs": [f"10.0.{i}.0/24" for i in range(51)]}, "allowed_cidrs"),
    ("resource type uppercase", lambda: {"resources": [ref("Website", "w_1")]}, "resources[0].type"),
    ("resource type empty", lambda: {"resources": [ref("", "w_1")]}, "resources[0].type"),
    ("resource type space", lambda: {"resources": [ref("web site", "w_1")]}, "resources[0].type"),
    ("resource type 65", lambda: {"resources": [ref("w" * 65, "w_1")]}, "resources[0].type"),
    ("resource id empty", lambda: {"resources": [ref("website", "")]}, "resources[0].id"),
    ("resource id space", lambda: {"resources": [ref("website", "w 1")]}, "resources[0].id"),
    ("environment prod", lambda: {"environment": "prod"}, "environment"),
    ("environment LIVE", lambda: {"environment": "LIVE"}, "environment"),
    ("kind unknown", lambda: {"kind": 99}, "kind"),
    ("principal_id malformed", lambda: {"principal_id": "robot"}, "principal_id"),
    ("request_id 129", lambda: {"request_id": "r" * 129}, "request_id"),
    ("51 resources", lambda: {"resources": [ref("website", f"w_{i}") for i in range(51)]}, "resources"),
    ("expire_time out of range", lambda: {"expire_time": Timestamp(seconds=2**62)}, "expire_time"),
    ("expire_time year 10000", lambda: {"expire_time": Timestamp(seconds=253402300800)}, "expire_time"),
    (
        "expire_time bad nanos",
        lambda: {"expire_time": Timestamp(seconds=2_000_000_000, nanos=-1)},
        "expire_time",
    ),
]


@pytest.mark.parametrize(("fields", "field"), [c[1:] for c in CREATE_CASES], ids=[c[0] for c in CREATE_CASES])
def test_create_key_refuses_bad_input(world: World, fields: Callable[[], dict[str, Any]], field: str) -> None:
    request = create_request(world, **fields())
    refused(world, lambda: world.admin.keys.CreateKey(request, metadata=world.md), field)


def test_ttl_days_beyond_the_organization_policy_is_refused(world: World) -> None:
    admin = world.admin
    org = admin.create_org("Short", max_expiry_days=30, default_expiry_days=10)
    account = admin.create_principal(org.id)
    request = create_request(world, org_id=org.id, principal_id=account.id, ttl_days=31)
    refused(world, lambda: admin.keys.CreateKey(request, metadata=world.md), "ttl_days")
    # The policy's own maximum is allowed, and ttl_days 0 means the policy default.
    at_max = admin.keys.CreateKey(
        create_request(world, org_id=org.id, principal_id=account.id, ttl_days=30), metadata=world.md
    )
    lifetime = at_max.key.expire_time.ToDatetime(UTC) - at_max.key.create_time.ToDatetime(UTC)
    assert lifetime == timedelta(days=30)
    default = admin.keys.CreateKey(
        create_request(world, org_id=org.id, principal_id=account.id, ttl_days=0), metadata=world.md
    )
    lifetime = default.key.expire_time.ToDatetime(UTC) - default.key.create_time.ToDatetime(UTC)
    assert lifetime == timedelta(days=10)


def test_values_at_the_limits_are_accepted(world: World) -> None:
    created = world.admin.keys.CreateKey(
        create_request(
            world,
            display_name="n" * 200,
            description="d" * 1000,
            ttl_days=365,
            allowed_cidrs=[f"10.0.{i}.0/24" for i in range(49)] + ["2001:db8::/32"],
            resources=[ref("w" * 64, f"w_{i}") for i in range(49)] + [ref("website", "*")],
            request_id="r" * 128,
        ),
        metadata=world.md,
    )
    assert len(created.key.display_name) == 200 and len(created.key.allowed_cidrs) == 50
    lifetime = created.key.expire_time.ToDatetime(UTC) - created.key.create_time.ToDatetime(UTC)
    assert lifetime == timedelta(days=365)


def test_expire_time_a_little_over_a_day_away_is_accepted(world: World) -> None:
    created = world.admin.keys.CreateKey(
        create_request(world, expire_time=stamp(timedelta(days=1, minutes=5))), metadata=world.md
    )
    assert created.key.HasField("expire_time")


# --- Update masks and other admin inputs ----------------------------------------------------------


def update_key(world: World, paths: list[str], **key_fields: Any) -> Callable[[], Any]:
    key = key_service_pb2.Key(id=world.key.id, **key_fields)
    request = key_service_pb2.UpdateKeyRequest(key=key, update_mask=FieldMask(paths=paths))
    return lambda: world.admin.keys.UpdateKey(request, metadata=world.md)


def update_org(world: World, paths: list[str], **fields: Any) -> Callable[[], Any]:
    org = organization_service_pb2.Organization(id=world.org_id, **fields)
    request = organization_service_pb2.UpdateOrganizationRequest(
        organization=org, update_mask=FieldMask(paths=paths)
    )
    return lambda: world.admin.orgs.UpdateOrganization(request, metadata=world.md)


def update_principal(world: World, paths: list[str], **fields: Any) -> Callable[[], Any]:
    principal = principal_service_pb2.Principal(id=world.principal_id, **fields)
    request = principal_service_pb2.UpdatePrincipalRequest(
        principal=principal, update_mask=FieldMask(paths=paths)
    )
    return lambda: world.admin.principals.UpdatePrincipal(request, metadata=world.md)


@pytest.mark.parametrize(
    "paths",
    [["state"], ["secret_hash"], ["expire_time"], ["kind"], ["org_id"], ["display_name", "kind"], []],
    ids=repr,
)
def test_update_key_refuses_an_unknown_or_immutable_mask_path(world: World, paths: list[str]) -> None:
    refused(
        world,
        update_key(world, paths, display_name="renamed", kind=key_service_pb2.KEY_KIND_PUBLISHABLE),
        "update_mask",
    )


@pytest.mark.parametrize(
    "paths",
    [["is_platform"], ["id"], ["key_policy.bogus"], ["create_time"], ["display_name", "id"], []],
    ids=repr,
)
def test_update_organization_refuses_an_unknown_mask_path(world: World, paths: list[str]) -> None:
    refused(world, update_org(world, paths, display_name="renamed"), "update_mask")


@pytest.mark.parametrize(
    "paths", [["kind"], ["org_id"], ["password"], ["display_name", "has_password"], []], ids=repr
)
def test_update_principal_refuses_an_unknown_mask_path(world: World, paths: list[str]) -> None:
    refused(world, update_principal(world, paths, display_name="renamed"), "update_mask")


def test_the_baseline_updates_are_accepted(world: World) -> None:
    assert update_key(world, ["display_name"], display_name="renamed")().key.display_name == "renamed"
    assert (
        update_org(world, ["display_name"], display_name="renamed")().organization.display_name == "renamed"
    )
    assert (
        update_principal(world, ["display_name"], display_name="renamed")().principal.display_name
        == "renamed"
    )


UPDATE_CASES: list[tuple[str, Callable[[World], Callable[[], Any]], str]] = [
    (
        "key display_name 201",
        lambda w: update_key(w, ["display_name"], display_name="n" * 201),
        "key.display_name",
    ),
    (
        "key display_name NUL",
        lambda w: update_key(w, ["display_name"], display_name="a\x00b"),
        "key.display_name",
    ),
    (
        "key description 1001",
        lambda w: update_key(w, ["description"], description="d" * 1001),
        "key.description",
    ),
    ("key scope", lambda w: update_key(w, ["scopes"], scopes=["inventory:read", "a::b"]), "key.scopes[1]"),
    ("key no scopes", lambda w: update_key(w, ["scopes"], scopes=[]), "key.scopes"),
    (
        "key cidr",
        lambda w: update_key(w, ["allowed_cidrs"], allowed_cidrs=["10.0.0.1/8"]),
        "key.allowed_cidrs[0]",
    ),
    (
        "key resource",
        lambda w: update_key(w, ["resources"], resources=[ref("Web", "w")]),
        "key.resources[0].type",
    ),
    (
        "key id",
        lambda w: (
            lambda: w.admin.keys.UpdateKey(
                key_service_pb2.UpdateKeyRequest(
                    key=key_service_pb2.Key(id="nope", display_name="x"),
                    update_mask=FieldMask(paths=["display_name"]),
                ),
                metadata=w.md,
            )
        ),
        "key.id",
    ),
    (
        "org display_name 201",
        lambda w: update_org(w, ["display_name"], display_name="n" * 201),
        "organization.display_name",
    ),
    (
        "org display_name NUL",
        lambda w: update_org(w, ["display_name"], display_name="x\x00"),
        "organization.display_name",
    ),
    ("org state unspecified", lambda w: update_org(w, ["state"]), "organization.state"),
    (
        "org policy",
        lambda w: update_org(
            w,
            ["key_policy.max_expiry_days"],
            key_policy=organization_service_pb2.KeyPolicy(max_expiry_days=400),
        ),
        "organization.key_policy.max_expiry_days",
    ),
    (
        "principal display_name 201",
        lambda w: update_principal(w, ["display_name"], display_name="n" * 201),
        "principal.display_name",
    ),
    (
        "principal display_name NUL",
        lambda w: update_principal(w, ["display_name"], display_name="\x00"),
        "principal.display_name",
    ),
    ("principal state unspecified", lambda w: update_principal(w, ["state"]), "principal.state"),
]


@pytest.mark.parametrize(("call", "field"), [c[1:] for c in UPDATE_CASES], ids=[c[0] for c in UPDATE_CASES])
def test_updates_refuse_bad_values(
    world: World, call: Callable[[World], Callable[[], Any]], field: str
) -> None:
    refused(world, call(world), field)


def test_create_organization_and_principal_refuse_bad_input(world: World) -> None:
    orgs, principals, md = world.admin.orgs, world.admin.principals, world.md
    for name, field in [("n" * 201, "display_name"), ("", "display_name"), ("a\x00b", "display_name")]:
        request = organization_service_pb2.CreateOrganizationRequest(display_name=name)
        refused(world, partial(orgs.CreateOrganization, request, metadata=md), field, name)
    policies: list[tuple[dict[str, Any], str]] = [
        ({"max_expiry_days": 400}, "key_policy.max_expiry_days"),
        ({"max_keys_per_service_account": 1001}, "key_policy.max_keys_per_service_account"),
        ({"max_keys_per_user": -1}, "key_policy.max_keys_per_user"),
        ({"max_expiry_days": 30, "default_expiry_days": 31}, "key_policy.default_expiry_days"),
    ]
    for policy, field in policies:
        request = organization_service_pb2.CreateOrganizationRequest(
            display_name="Org", key_policy=organization_service_pb2.KeyPolicy(**policy)
        )
        refused(world, partial(orgs.CreateOrganization, request, metadata=md), field, policy)
    for kind, name, field in [
        (principal_service_pb2.PRINCIPAL_KIND_USER, "n" * 201, "display_name"),
        (principal_service_pb2.PRINCIPAL_KIND_USER, "nul\x00here", "display_name"),
        (principal_service_pb2.PRINCIPAL_KIND_UNSPECIFIED, "alice", "kind"),
    ]:
        create = principal_service_pb2.CreatePrincipalRequest(
            org_id=world.org_id, kind=kind, display_name=name
        )
        refused(world, partial(principals.CreatePrincipal, create, metadata=md), field, create)
    password = principal_service_pb2.SetPrincipalPasswordRequest(
        principal_id=world.principal_id, password="short"
    )
    refused(world, lambda: principals.SetPrincipalPassword(password, metadata=md), "password")


def test_rotate_and_revoke_refuse_bad_input(world: World) -> None:
    keys, md = world.admin.keys, world.md
    for grace in (
        duration(timedelta(days=7, seconds=1)),
        duration(-timedelta(seconds=1)),
        Duration(seconds=10**15),  # beyond the range of a Duration
    ):
        rotate = key_service_pb2.RotateKeyRequest(key_id=world.key.id, grace_period=grace)
        refused(world, partial(keys.RotateKey, rotate, metadata=md), "grace_period", grace)
    revoke = key_service_pb2.RevokeKeyRequest(key_id=world.key.id, reason="r" * 501)
    refused(world, lambda: keys.RevokeKey(revoke, metadata=md), "reason")
    # The key still works: neither refused call touched it.
    me = world.admin.authz.WhoAmI(
        authorization_service_pb2.WhoAmIRequest(), metadata=(("authorization", f"Bearer {world.api_key}"),)
    )
    assert me.key_id == world.key.id


BAD_KEY_IDS = ["", "nonsense", "key-0123", "KEY_abc", "key_!!", "org_abc", "key_" + "a" * 70, "key_abc def"]


def test_malformed_key_ids_are_refused(world: World) -> None:
    keys, md = world.admin.keys, world.md
    for key_id in BAD_KEY_IDS:
        refused(
            world, partial(keys.GetKey, key_service_pb2.GetKeyRequest(id=key_id), metadata=md), "id", key_id
        )
        for call in (
            partial(keys.RotateKey, key_service_pb2.RotateKeyRequest(key_id=key_id), metadata=md),
            partial(keys.RevokeKey, key_service_pb2.RevokeKeyRequest(key_id=key_id), metadata=md),
            partial(keys.DeleteKey, key_service_pb2.DeleteKeyRequest(key_id=key_id), metadata=md),
        ):
            refused(world, call, "key_id", key_id)
        if key_id:  # an empty key_id on the audit list means "any key"
            request = audit_service_pb2.ListAuditEventsRequest(key_id=key_id)
            refused(world, partial(world.admin.audit.ListAuditEvents, request, metadata=md), "key_id", key_id)


def test_out_of_range_times_and_windows_are_refused(world: World) -> None:
    audit, keys, md = world.admin.audit, world.admin.keys, world.md
    far = Timestamp(seconds=-(2**62))
    for name, listing in (
        ("start_time", audit_service_pb2.ListAuditEventsRequest(start_time=far)),
        ("end_time", audit_service_pb2.ListAuditEventsRequest(end_time=far)),
    ):
        refused(world, partial(audit.ListAuditEvents, listing, metadata=md), name)
    backwards = audit_service_pb2.ListAuditEventsRequest(
        start_time=stamp(timedelta(0)), end_time=stamp(-timedelta(hours=1))
    )
    refused(world, partial(audit.ListAuditEvents, backwards, metadata=md), "end_time")
    for within in (
        Duration(seconds=10**15),
        Duration(seconds=0),
        duration(-timedelta(days=1)),
        duration(timedelta(days=367)),
    ):
        expiring = key_service_pb2.ListExpiringKeysRequest(org_id=world.org_id, within=within)
        refused(world, partial(keys.ListExpiringKeys, expiring, metadata=md), "within", within)


def test_malformed_principal_and_organization_ids_are_refused(world: World) -> None:
    admin, md = world.admin, world.md
    for bad in ("", "alice", "key_abc def", "USR_abc"):
        request = principal_service_pb2.GetPrincipalRequest(id=bad)
        refused(world, partial(admin.principals.GetPrincipal, request, metadata=md), "id", bad)
    for bad in ("", "acme", "usr_abc", "org_a/b"):
        get = organization_service_pb2.GetOrganizationRequest(id=bad)
        refused(world, partial(admin.orgs.GetOrganization, get, metadata=md), "id", bad)
    listing = key_service_pb2.ListKeysRequest(org_id=world.org_id, principal_id="not an id")
    refused(world, lambda: admin.keys.ListKeys(listing, metadata=md), "principal_id")


# --- Paging --------------------------------------------------------------------------------------


def list_calls(world: World) -> dict[str, Callable[..., Any]]:
    """Each List RPC, taking page_size/page_token keyword arguments."""
    admin, md = world.admin, world.md
    return {
        "ListKeys": lambda **kw: admin.keys.ListKeys(
            key_service_pb2.ListKeysRequest(org_id=world.org_id, **kw), metadata=md
        ),
        "ListPrincipals": lambda **kw: admin.principals.ListPrincipals(
            principal_service_pb2.ListPrincipalsRequest(org_id=world.org_id, **kw), metadata=md
        ),
        "ListOrganizations": lambda **kw: admin.orgs.ListOrganizations(
            organization_service_pb2.ListOrganizationsRequest(**kw), metadata=md
        ),
        "ListAuditEvents": lambda **kw: admin.audit.ListAuditEvents(
            audit_service_pb2.ListAuditEventsRequest(**kw), metadata=md
        ),
        "ListExpiringKeys": lambda **kw: admin.keys.ListExpiringKeys(
            key_service_pb2.ListExpiringKeysRequest(
                org_id=world.org_id, within=duration(timedelta(days=365)), **kw
            ),
            metadata=md,
        ),
    }


def _b64(data: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


GARBAGE_TOKENS = [
    "garbage",
    "!!!",
    "ü",
    "a" * 600,
    _b64([1, 2]),
    _b64({"m": None, "f": "x"}),
    _b64({"m": "key_0", "f": "0000000000000000"}),
    base64.urlsafe_b64encode(b"\xff\xfe\x00").decode(),
]


@pytest.mark.parametrize(
    "rpc", ["ListKeys", "ListPrincipals", "ListOrganizations", "ListAuditEvents", "ListExpiringKeys"]
)
def test_garbage_page_tokens_and_negative_page_sizes_are_refused(world: World, rpc: str) -> None:
    call = list_calls(world)[rpc]
    for token in GARBAGE_TOKENS:
        refused(world, partial(call, page_token=token), "page_token", token)
    refused(world, lambda: call(page_size=-1), "page_size")
    call(page_size=0)  # 0 means the default, not an error


# Marks the service never writes, in tokens bound to the right filters: the fingerprint of the
# filters is no secret (anyone can compute it), so the mark inside must be checked too.
FORGED_TIME_MARKS = [
    ["0001-01-01T00:00:00", "key_x"],  # naive: once turned year 0 on the way to the database (INTERNAL)
    ["0001-01-01T00:00:00+05:00", "key_x"],  # aware, but before year 1 in UTC
    ["2030-01-01T00:00:00", "key_x"],  # naive
    ["2030-01-01T00:00:00+00:00", 7],  # the id is not a string
]


@pytest.mark.parametrize("mark", FORGED_TIME_MARKS, ids=repr)
def test_a_forged_time_mark_in_a_page_token_is_refused(world: World, mark: list[object]) -> None:
    within = timedelta(days=365)
    token = encode_token(mark, [world.org_id, within.total_seconds()])
    request = key_service_pb2.ListExpiringKeysRequest(
        org_id=world.org_id, within=duration(within), page_token=token
    )
    refused(world, partial(world.admin.keys.ListExpiringKeys, request, metadata=world.md), "page_token")
    token = encode_token(mark, [world.org_id, None, None])
    listing = principal_service_pb2.ListPrincipalsRequest(org_id=world.org_id, page_token=token)
    refused(world, partial(world.admin.principals.ListPrincipals, listing, metadata=world.md), "page_token")


def test_a_forged_mark_with_a_nul_in_a_page_token_is_refused(world: World) -> None:
    # PostgreSQL refuses a NUL in text: it once reached the query and answered UNAVAILABLE.
    calls = list_calls(world)
    for rpc, filters in (
        ("ListOrganizations", [None]),
        ("ListKeys", [world.org_id, "", None]),
        ("ListPrincipals", [world.org_id, None, None]),
    ):
        mark: object = ["2030-01-01T00:00:00+00:00", "x\x00"] if rpc == "ListPrincipals" else "key_\x00"
        token = encode_token(mark, filters)
        refused(world, partial(calls[rpc], page_token=token), "page_token", rpc)


def test_a_page_token_is_bound_to_its_filters(world: World) -> None:
    admin, md = world.admin, world.md
    admin.create_principal(world.org_id, principal_service_pb2.PRINCIPAL_KIND_USER, "alice")
    admin.create_key(world.org_id, world.principal_id, ["inventory:write"])

    def principals(**kw: Any) -> principal_service_pb2.ListPrincipalsResponse:
        request = principal_service_pb2.ListPrincipalsRequest(org_id=world.org_id, page_size=1, **kw)
        return admin.principals.ListPrincipals(request, metadata=md)

    token = principals().next_page_token
    assert token and len(principals(page_token=token).principals) == 1  # same filters: fine
    refused(
        world,
        lambda: principals(page_token=token, kind=principal_service_pb2.PRINCIPAL_KIND_USER),
        "page_token",
    )
    refused(
        world,
        lambda: principals(page_token=token, state=principal_service_pb2.PRINCIPAL_STATE_ACTIVE),
        "page_token",
    )

    def keys(**kw: Any) -> key_service_pb2.ListKeysResponse:
        return admin.keys.ListKeys(key_service_pb2.ListKeysRequest(page_size=1, **kw), metadata=md)

    key_token = keys(org_id=world.org_id).next_page_token
    assert key_token and len(keys(org_id=world.org_id, page_token=key_token).keys) == 1
    refused(
        world,
        lambda: keys(org_id=world.org_id, page_token=key_token, state=key_service_pb2.KEY_STATE_ACTIVE),
        "page_token",
    )
    refused(
        world,
        lambda: keys(org_id=world.org_id, principal_id=world.principal_id, page_token=key_token),
        "page_token",
    )
    other = admin.create_org("Other")
    refused(world, lambda: keys(org_id=other.id, page_token=key_token), "page_token")
    # A token of one list is not a token of another.
    refused(world, lambda: principals(page_token=key_token), "page_token")

    def events(**kw: Any) -> audit_service_pb2.ListAuditEventsResponse:
        return admin.audit.ListAuditEvents(
            audit_service_pb2.ListAuditEventsRequest(page_size=1, **kw), metadata=md
        )

    event_token = events().next_page_token
    assert event_token and len(events(page_token=event_token).events) == 1
    refused(world, lambda: events(page_token=event_token, action="key.create"), "page_token")
    refused(world, lambda: events(page_token=event_token, org_id=world.org_id), "page_token")

    # A platform caller's organization token does not serve a tenant, whose list is narrower.
    org_token = admin.orgs.ListOrganizations(
        organization_service_pb2.ListOrganizationsRequest(page_size=1), metadata=md
    ).next_page_token
    assert org_token
    tenant_account = admin.create_principal(world.org_id, name="org-reader")
    tenant = Admin(
        world.harness.channel,
        admin.create_key(world.org_id, tenant_account.id, ["admin:organizations"]).api_key,
    )
    listing = organization_service_pb2.ListOrganizationsRequest(page_token=org_token)
    refused(world, lambda: tenant.orgs.ListOrganizations(listing, metadata=tenant.metadata), "page_token")


def test_a_page_size_above_1000_is_lowered_not_refused(world: World) -> None:
    now = datetime.now(UTC).replace(tzinfo=None)
    rows = [
        {
            "id": new_id("usr"),
            "org_id": world.org_id,
            "kind": "user",
            "display_name": f"user {i}",
            "state": "active",
            "password_hash": None,
            "create_time": now,
            "update_time": now,
        }
        for i in range(1001)
    ]
    with world.harness.db.engine.begin() as connection:
        connection.execute(insert(PrincipalRow), rows)

    def listing(**kw: Any) -> principal_service_pb2.ListPrincipalsResponse:
        request = principal_service_pb2.ListPrincipalsRequest(org_id=world.org_id, **kw)
        return world.admin.principals.ListPrincipals(request, metadata=world.md)

    first = listing(page_size=5000)
    assert len(first.principals) == 1000 and first.next_page_token
    rest = listing(page_size=5000, page_token=first.next_page_token)
    assert len(rest.principals) == 2 and not rest.next_page_token  # 1001 users and the service account
    assert len(listing(page_size=0).principals) == 50
    assert len(listing(page_size=2**31 - 1).principals) == 1000


# --- Credentials ---------------------------------------------------------------------------------


def list_orgs_with(world: World, metadata: tuple[tuple[str, str], ...]) -> Callable[[], Any]:
    request = organization_service_pb2.ListOrganizationsRequest()
    return lambda: world.admin.orgs.ListOrganizations(request, metadata=metadata)


def forged_credentials(real: str) -> dict[str, str]:
    """Credentials that must all fail alike: malformed, unknown, or with a wrong secret."""
    parsed = apikeys.parse(real)
    assert parsed is not None
    flipped = mistyped(real)
    wrong_secret = apikeys.generate(parsed.kind, parsed.environment, parsed.lookup).plaintext
    assert apikeys.parse(wrong_secret) is not None and wrong_secret.startswith(parsed.prefix + "_")
    # The real secret under another kind tag, with a checksum that fits.
    other_kind = apikeys.display_prefix(KeyKind.PUBLISHABLE, parsed.environment, parsed.lookup)
    other_env = apikeys.display_prefix(parsed.kind, "test", parsed.lookup)
    retagged = {
        f"{prefix}_{parsed.secret}" + apikeys._checksum(f"{prefix}_{parsed.secret}")
        for prefix in (other_kind, other_env)
    }
    assert all(apikeys.parse(c) is not None for c in retagged)
    return {
        "wrong checksum": flipped,
        "random string": "hello-this-is-not-a-key",
        "random idk string": "idk_live_" + "x" * 40,
        "truncated": real[:-3],
        "extended": real + "0",
        "unknown well-formed": apikeys.generate(KeyKind.SECRET, "live").plaintext,
        "wrong secret": wrong_secret,
        **{f"retagged {i}": c for i, c in enumerate(sorted(retagged))},
        "oversized": "idk_live_" + "A" * 5000,
    }


def test_bad_credentials_are_all_invalid_api_key_with_one_message(world: World) -> None:
    messages = set()
    for name, credential in forged_credentials(world.harness.platform_key).items():
        for metadata in ((("authorization", f"Bearer {credential}"),), (("x-api-key", credential),)):
            details = expect_error(
                list_orgs_with(world, metadata), grpc.StatusCode.UNAUTHENTICATED, "INVALID_API_KEY"
            )
            assert credential not in details.message, name
            messages.add(details.message)
    assert len(messages) == 1, messages
    # The real key still works after all those failures.
    assert list_orgs_with(world, world.md)().organizations


def test_a_tenant_key_with_a_wrong_secret_is_invalid(world: World) -> None:
    parsed = apikeys.parse(world.api_key)
    assert parsed is not None
    forged = apikeys.generate(parsed.kind, parsed.environment, parsed.lookup).plaintext
    expect_error(
        list_orgs_with(world, (("authorization", f"Bearer {forged}"),)),
        grpc.StatusCode.UNAUTHENTICATED,
        "INVALID_API_KEY",
    )


@pytest.mark.parametrize(
    "metadata",
    [
        (("authorization", "Basic xyz"),),
        (("authorization", "Bearer"),),
        (("authorization", "Bearer    "),),
        (("authorization", ""),),
        (("x-api-key", ""),),
        (),
    ],
    ids=repr,
)
def test_a_missing_or_non_bearer_authorization_is_missing_authorization(
    world: World, metadata: tuple[tuple[str, str], ...]
) -> None:
    expect_error(list_orgs_with(world, metadata), grpc.StatusCode.UNAUTHENTICATED, "MISSING_AUTHORIZATION")


def test_basic_authorization_is_refused_even_beside_a_valid_x_api_key(world: World) -> None:
    metadata = (("authorization", "Basic xyz"), ("x-api-key", world.harness.platform_key))
    expect_error(list_orgs_with(world, metadata), grpc.StatusCode.UNAUTHENTICATED, "MISSING_AUTHORIZATION")


def test_x_api_key_metadata_is_a_credential(world: World) -> None:
    metadata = (("x-api-key", world.api_key),)
    me = world.admin.authz.WhoAmI(authorization_service_pb2.WhoAmIRequest(), metadata=metadata)
    assert (me.key_id, me.org_id, me.principal_id) == (world.key.id, world.org_id, world.principal_id)
    platform = (("x-api-key", world.harness.platform_key),)
    assert list_orgs_with(world, platform)().organizations
    # The bearer scheme name is case-insensitive (RFC 9110).
    lower = (("authorization", f"bearer {world.api_key}"),)
    assert (
        world.admin.authz.WhoAmI(authorization_service_pb2.WhoAmIRequest(), metadata=lower).key_id
        == world.key.id
    )


def test_a_jwt_looking_credential_is_an_invalid_token(world: World) -> None:
    # Since the token issue, a credential shaped like a JWT is judged as one.
    expect_error(
        list_orgs_with(world, (("authorization", "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."),)),
        grpc.StatusCode.UNAUTHENTICATED,
        "INVALID_TOKEN",
    )
