"""KeyService over a real server: the whole lifecycle of an API key, its rules and its event stream."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import grpc
from google.protobuf import duration_pb2, field_mask_pb2

from identity.v1 import key_service_pb2, principal_service_pb2
from tests.conftest import Harness
from tests.helpers import Admin, expect_error

USER = principal_service_pb2.PRINCIPAL_KIND_USER
CALLER_SCOPES = ["admin:apikeys"]


def get_key_as(harness: Harness, api_key: str, key_id: str) -> key_service_pb2.Key:
    """Call GetKey with ``api_key`` as the caller credential."""
    caller = harness.admin(api_key)
    return caller.keys.GetKey(key_service_pb2.GetKeyRequest(id=key_id), metadata=caller.metadata).key


def list_all(admin: Admin, page_size: int, **filters: Any) -> tuple[list[str], list[int]]:
    """Every key id of a ListKeys query, page by page, and the size of each page."""
    ids: list[str] = []
    sizes: list[int] = []
    token = ""
    for _ in range(100):
        response = admin.keys.ListKeys(
            key_service_pb2.ListKeysRequest(page_size=page_size, page_token=token, **filters),
            metadata=admin.metadata,
        )
        ids += [k.id for k in response.keys]
        sizes.append(len(response.keys))
        token = response.next_page_token
        if not token:
            return ids, sizes
    raise AssertionError("ListKeys never returned an empty next_page_token")


def lifetime(key: key_service_pb2.Key) -> timedelta:
    """How long a key lives, from its creation to its expiry."""
    return key.expire_time.ToDatetime() - key.create_time.ToDatetime()


def seconds(value: float) -> duration_pb2.Duration:
    """A Duration of ``value`` seconds."""
    duration = duration_pb2.Duration()
    duration.FromTimedelta(timedelta(seconds=value))
    return duration


def rotate(admin: Admin, key_id: str, grace: float) -> key_service_pb2.RotateKeyResponse:
    """Rotate a key with a grace period of ``grace`` seconds."""
    return admin.keys.RotateKey(
        key_service_pb2.RotateKeyRequest(key_id=key_id, grace_period=seconds(grace)), metadata=admin.metadata
    )


def revoke(admin: Admin, key_id: str, reason: str = "") -> key_service_pb2.Key:
    """Revoke a key."""
    return admin.keys.RevokeKey(
        key_service_pb2.RevokeKeyRequest(key_id=key_id, reason=reason), metadata=admin.metadata
    ).key


def update(admin: Admin, key: key_service_pb2.Key, *paths: str) -> key_service_pb2.Key:
    """UpdateKey with ``key`` and a mask of ``paths``."""
    request = key_service_pb2.UpdateKeyRequest(
        key=key, update_mask=field_mask_pb2.FieldMask(paths=list(paths))
    )
    return admin.keys.UpdateKey(request, metadata=admin.metadata).key


def test_create_then_get_returns_the_metadata_without_the_secret(harness: Harness) -> None:
    admin = harness.admin()
    org = admin.create_org()
    account = admin.create_principal(org.id)
    created = admin.create_key(
        org.id,
        account.id,
        ["inventory:read", "inventory:write"],
        [("website", "w_1")],
        description="for the shop",
        allowed_cidrs=["10.0.0.0/8"],
    )
    key, plaintext = created.key, created.api_key
    assert key.id.startswith("key_") and key.org_id == org.id and key.principal_id == account.id
    assert plaintext.startswith("idk_live_") and plaintext.startswith(key.prefix)
    assert key.last4 == plaintext[-4:] and plaintext not in str(key)
    assert key.state == key_service_pb2.KEY_STATE_ACTIVE and key.kind == key_service_pb2.KEY_KIND_SECRET
    assert key.created_by == harness.platform_principal_id

    fetched = admin.keys.GetKey(key_service_pb2.GetKeyRequest(id=key.id), metadata=admin.metadata).key
    assert fetched.display_name == "test key" and fetched.description == "for the shop"
    assert list(fetched.scopes) == ["inventory:read", "inventory:write"]
    assert [(r.type, r.id) for r in fetched.resources] == [("website", "w_1")]
    assert list(fetched.allowed_cidrs) == ["10.0.0.0/8"]
    assert (fetched.prefix, fetched.last4, fetched.expire_time) == (key.prefix, key.last4, key.expire_time)
    assert plaintext not in str(fetched) and created.api_key[len(key.prefix) :] not in str(fetched)

    expect_error(
        lambda: admin.keys.GetKey(
            key_service_pb2.GetKeyRequest(id="key_00000000000000000000000000"), metadata=admin.metadata
        ),
        grpc.StatusCode.NOT_FOUND,
        "NOT_FOUND",
    )


def test_list_keys_pages_and_filters(harness: Harness) -> None:
    admin = harness.admin()
    org = admin.create_org(max_keys_per_service_account=10)
    first, second = admin.create_principal(org.id, name="one"), admin.create_principal(org.id, name="two")
    firsts = [admin.create_key(org.id, first.id, ["a:read"]).key.id for _ in range(5)]
    seconds_ = [admin.create_key(org.id, second.id, ["a:read"]).key.id for _ in range(2)]
    other_org = admin.create_org("Other")
    admin.create_key(other_org.id, admin.create_principal(other_org.id).id, ["a:read"])

    ids, sizes = list_all(admin, 2, org_id=org.id)
    assert ids == firsts + seconds_ and sizes == [2, 2, 2, 1]
    ids, sizes = list_all(admin, 0, org_id=org.id)
    assert ids == firsts + seconds_ and sizes == [7]
    assert list_all(admin, 7, org_id=org.id) == (firsts + seconds_, [7])

    assert list_all(admin, 1, org_id=org.id, principal_id=second.id) == (seconds_, [1, 1])
    assert list_all(admin, 2, org_id=org.id, principal_id=first.id)[0] == firsts

    revoke(admin, firsts[1])
    revoke(admin, seconds_[0])
    revoked = key_service_pb2.KEY_STATE_REVOKED
    active = key_service_pb2.KEY_STATE_ACTIVE
    assert list_all(admin, 1, org_id=org.id, state=revoked)[0] == [firsts[1], seconds_[0]]
    assert list_all(admin, 2, org_id=org.id, state=active)[0] == [firsts[0], *firsts[2:], seconds_[1]]
    assert list_all(admin, 2, org_id=org.id, state=key_service_pb2.KEY_STATE_EXPIRED)[0] == []
    assert list_all(admin, 5, org_id=org.id, principal_id=second.id, state=active)[0] == [seconds_[1]]

    details = expect_error(
        lambda: admin.keys.ListKeys(
            key_service_pb2.ListKeysRequest(org_id=org.id, page_size=-1), metadata=admin.metadata
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    assert details.fields == ["page_size"]
    token = admin.keys.ListKeys(
        key_service_pb2.ListKeysRequest(org_id=org.id, page_size=1), metadata=admin.metadata
    ).next_page_token
    assert token
    details = expect_error(
        lambda: admin.keys.ListKeys(
            key_service_pb2.ListKeysRequest(org_id=org.id, principal_id=first.id, page_token=token),
            metadata=admin.metadata,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    assert details.fields == ["page_token"]


def test_update_changes_only_the_masked_fields(harness: Harness) -> None:
    admin = harness.admin()
    org_id, account_id, _ = admin.tenant_admin()
    created = admin.create_key(org_id, account_id, ["admin:apikeys"], description="before")
    key = created.key
    # The key works as a caller before its scopes change.
    assert get_key_as(harness, created.api_key, key.id).id == key.id

    changed = key_service_pb2.Key(
        id=key.id, display_name="renamed", description="after", scopes=["read:audit", "inventory:read"]
    )
    after = update(admin, changed, "display_name")
    assert (after.display_name, after.description, list(after.scopes)) == (
        "renamed",
        "before",
        ["admin:apikeys"],
    )
    after = update(admin, changed, "description", "scopes")
    assert (after.display_name, after.description) == ("renamed", "after")
    assert list(after.scopes) == ["read:audit", "inventory:read"]
    assert after.update_time.ToDatetime() >= key.update_time.ToDatetime()
    assert (after.id, after.prefix, after.last4, after.expire_time) == (
        key.id,
        key.prefix,
        key.last4,
        key.expire_time,
    )
    fetched = admin.keys.GetKey(key_service_pb2.GetKeyRequest(id=key.id), metadata=admin.metadata).key
    assert (fetched.display_name, fetched.description, list(fetched.scopes)) == (
        "renamed",
        "after",
        ["read:audit", "inventory:read"],
    )
    # The new scopes apply to the key as a caller at once: it lost admin:apikeys.
    expect_error(
        lambda: get_key_as(harness, created.api_key, key.id),
        grpc.StatusCode.PERMISSION_DENIED,
        "INSUFFICIENT_SCOPE",
    )

    for paths in (["state"], ["display_name", "prefix"], ["no_such_field"], []):
        details = expect_error(
            partial(update, admin, changed, *paths),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
        )
        assert details.fields == ["update_mask"], paths
    details = expect_error(
        lambda: update(admin, key_service_pb2.Key(id=key.id, display_name=""), "display_name"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    assert details.fields == ["key.display_name"]
    # Nothing of the refused updates was applied.
    fetched = admin.keys.GetKey(key_service_pb2.GetKeyRequest(id=key.id), metadata=admin.metadata).key
    assert fetched.display_name == "renamed"


def test_rotate_keeps_the_old_secret_for_the_grace_period(harness: Harness) -> None:
    admin = harness.admin()
    org = admin.create_org()
    account = admin.create_principal(org.id)
    created = admin.create_key(org.id, account.id, CALLER_SCOPES)
    old = created.api_key

    rotated = rotate(admin, created.key.id, 1.5)
    new = rotated.api_key
    assert rotated.key.id == created.key.id and new != old and new.startswith("idk_live_")
    assert rotated.key.last4 == new[-4:] and rotated.key.prefix == created.key.prefix
    assert rotated.key.HasField("previous_secret_expire_time")
    grace_end = rotated.key.previous_secret_expire_time.ToDatetime(tzinfo=UTC)
    assert timedelta(seconds=1) < grace_end - datetime.now(UTC) <= timedelta(seconds=1.5)

    # During the grace both secrets authenticate as the same key.
    assert get_key_as(harness, old, created.key.id).id == created.key.id
    assert get_key_as(harness, new, created.key.id).last4 == new[-4:]

    time.sleep(max(0.0, (grace_end - datetime.now(UTC)).total_seconds()) + 0.1)
    expect_error(
        lambda: get_key_as(harness, old, created.key.id), grpc.StatusCode.UNAUTHENTICATED, "INVALID_API_KEY"
    )
    after = get_key_as(harness, new, created.key.id)
    assert after.id == created.key.id and not after.HasField("previous_secret_expire_time")


def test_rotate_without_grace_stops_the_old_secret_at_once(harness: Harness) -> None:
    admin = harness.admin()
    org = admin.create_org()
    account = admin.create_principal(org.id)
    created = admin.create_key(org.id, account.id, CALLER_SCOPES)
    assert get_key_as(harness, created.api_key, created.key.id).id == created.key.id

    rotated = admin.keys.RotateKey(
        key_service_pb2.RotateKeyRequest(key_id=created.key.id), metadata=admin.metadata
    )
    assert rotated.key.id == created.key.id and not rotated.key.HasField("previous_secret_expire_time")
    expect_error(
        lambda: get_key_as(harness, created.api_key, created.key.id),
        grpc.StatusCode.UNAUTHENTICATED,
        "INVALID_API_KEY",
    )
    assert get_key_as(harness, rotated.api_key, created.key.id).id == created.key.id

    # A second rotation with grace 0 ends the first new secret too.
    again = rotate(admin, created.key.id, 0)
    expect_error(
        lambda: get_key_as(harness, rotated.api_key, created.key.id),
        grpc.StatusCode.UNAUTHENTICATED,
        "INVALID_API_KEY",
    )
    assert get_key_as(harness, again.api_key, created.key.id).id == created.key.id

    for grace in (7 * 86400 + 1, -1):
        details = expect_error(
            partial(rotate, admin, created.key.id, grace),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
        )
        assert details.fields == ["grace_period"]
    # The refused rotations changed nothing.
    assert get_key_as(harness, again.api_key, created.key.id).last4 == again.api_key[-4:]
    # Exactly seven days is allowed.
    week = rotate(admin, created.key.id, 7 * 86400)
    end = week.key.previous_secret_expire_time.ToDatetime(tzinfo=UTC)
    assert abs(end - datetime.now(UTC) - timedelta(days=7)) < timedelta(minutes=1)


def test_revoke_is_final(harness: Harness) -> None:
    admin = harness.admin()
    org = admin.create_org()
    account = admin.create_principal(org.id)
    created = admin.create_key(org.id, account.id, CALLER_SCOPES)
    key_id = created.key.id

    revoked = revoke(admin, key_id, "leaked in a log")
    assert revoked.state == key_service_pb2.KEY_STATE_REVOKED and revoked.revoke_reason == "leaked in a log"
    assert revoked.HasField("revoke_time")
    fetched = admin.keys.GetKey(key_service_pb2.GetKeyRequest(id=key_id), metadata=admin.metadata).key
    assert fetched.state == key_service_pb2.KEY_STATE_REVOKED and fetched.revoke_reason == "leaked in a log"
    assert fetched.revoke_time == revoked.revoke_time

    expect_error(
        lambda: get_key_as(harness, created.api_key, key_id),
        grpc.StatusCode.UNAUTHENTICATED,
        "REVOKED_API_KEY",
    )
    expect_error(
        lambda: revoke(admin, key_id, "again"), grpc.StatusCode.FAILED_PRECONDITION, "FAILED_PRECONDITION"
    )
    expect_error(lambda: rotate(admin, key_id, 0), grpc.StatusCode.FAILED_PRECONDITION, "FAILED_PRECONDITION")
    expect_error(
        lambda: update(admin, key_service_pb2.Key(id=key_id, display_name="x"), "display_name"),
        grpc.StatusCode.FAILED_PRECONDITION,
        "FAILED_PRECONDITION",
    )
    # The failed calls did not touch the key: still revoked with its first reason and name.
    fetched = admin.keys.GetKey(key_service_pb2.GetKeyRequest(id=key_id), metadata=admin.metadata).key
    assert (fetched.revoke_reason, fetched.display_name, fetched.last4) == (
        "leaked in a log",
        "test key",
        created.key.last4,
    )


def test_delete_removes_the_key(harness: Harness) -> None:
    admin = harness.admin()
    org = admin.create_org()
    account = admin.create_principal(org.id)
    created = admin.create_key(org.id, account.id, CALLER_SCOPES)
    kept = admin.create_key(org.id, account.id, ["a:read"])
    key_id = created.key.id

    deleted = admin.keys.DeleteKey(key_service_pb2.DeleteKeyRequest(key_id=key_id), metadata=admin.metadata)
    assert deleted.key.id == key_id
    expect_error(
        lambda: admin.keys.GetKey(key_service_pb2.GetKeyRequest(id=key_id), metadata=admin.metadata),
        grpc.StatusCode.NOT_FOUND,
        "NOT_FOUND",
    )
    assert list_all(admin, 10, org_id=org.id)[0] == [kept.key.id]
    expect_error(
        lambda: get_key_as(harness, created.api_key, kept.key.id),
        grpc.StatusCode.UNAUTHENTICATED,
        "INVALID_API_KEY",
    )
    expect_error(
        lambda: admin.keys.DeleteKey(
            key_service_pb2.DeleteKeyRequest(key_id=key_id), metadata=admin.metadata
        ),
        grpc.StatusCode.NOT_FOUND,
        "NOT_FOUND",
    )
    # A deleted key frees its place in the quota (the default allows two per service account).
    assert admin.create_key(org.id, account.id, ["a:read"]).api_key


def test_list_expiring_keys(harness: Harness) -> None:
    admin = harness.admin()
    org = admin.create_org(max_keys_per_service_account=5)
    account = admin.create_principal(org.id)
    soon = admin.create_key(org.id, account.id, ["a:read"], ttl_days=3).key
    later = admin.create_key(org.id, account.id, ["a:read"], ttl_days=30).key
    revoked_soon = admin.create_key(org.id, account.id, ["a:read"], ttl_days=2).key
    revoke(admin, revoked_soon.id)
    other_org = admin.create_org("Other")
    admin.create_key(other_org.id, admin.create_principal(other_org.id).id, ["a:read"], ttl_days=1)

    def expiring(within: duration_pb2.Duration, page_size: int = 0, token: str = "") -> tuple[list[str], str]:
        response = admin.keys.ListExpiringKeys(
            key_service_pb2.ListExpiringKeysRequest(
                org_id=org.id, within=within, page_size=page_size, page_token=token
            ),
            metadata=admin.metadata,
        )
        return [k.id for k in response.keys], response.next_page_token

    assert expiring(seconds(7 * 86400)) == ([soon.id], "")
    assert expiring(seconds(86400)) == ([], "")
    assert expiring(seconds(31 * 86400)) == ([soon.id, later.id], "")
    page, token = expiring(seconds(31 * 86400), page_size=1)
    assert page == [soon.id] and token
    assert expiring(seconds(31 * 86400), page_size=1, token=token) == ([later.id], "")

    for within in (seconds(0), seconds(-60), seconds(367 * 86400)):
        details = expect_error(
            partial(expiring, within),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
        )
        assert details.fields == ["within"]


def test_create_key_is_idempotent_with_a_request_id(harness: Harness) -> None:
    admin = harness.admin()
    org = admin.create_org()
    account = admin.create_principal(org.id)
    first = admin.create_key(org.id, account.id, ["a:read"], request_id="req-1")
    assert first.api_key
    replay = admin.create_key(org.id, account.id, ["a:read"], request_id="req-1")
    assert replay.key.id == first.key.id and replay.api_key == ""
    assert replay.key.last4 == first.key.last4
    assert list_all(admin, 10, org_id=org.id)[0] == [first.key.id]

    # Another request id creates another key; a key without one is never replayed.
    other = admin.create_key(org.id, account.id, ["a:read"], request_id="req-2")
    assert other.key.id != first.key.id and other.api_key
    assert list_all(admin, 10, org_id=org.id)[0] == [first.key.id, other.key.id]
    # The quota (two per service account) is full, yet a replay still answers with the first key.
    again = admin.create_key(org.id, account.id, ["a:read"], request_id="req-1")
    assert again.key.id == first.key.id and again.api_key == ""
    expect_error(
        lambda: admin.create_key(org.id, account.id, ["a:read"]),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "QUOTA_EXCEEDED",
    )


def test_publishable_keys_hold_only_track_events(harness: Harness) -> None:
    admin = harness.admin()
    org = admin.create_org(max_keys_per_service_account=5)
    account = admin.create_principal(org.id)
    publishable = key_service_pb2.KEY_KIND_PUBLISHABLE
    created = admin.create_key(org.id, account.id, ["track:events"], kind=publishable)
    assert created.api_key.startswith("idp_live_") and created.api_key.startswith(created.key.prefix)
    assert created.key.kind == publishable and list(created.key.scopes) == ["track:events"]

    for scopes in (["track:events", "inventory:read"], ["admin:apikeys"], ["*"], ["track:*"]):
        details = expect_error(
            partial(admin.create_key, org.id, account.id, scopes, kind=publishable),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
        )
        assert details.fields == ["scopes"], scopes
    details = expect_error(
        lambda: update(admin, key_service_pb2.Key(id=created.key.id, scopes=["inventory:read"]), "scopes"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    assert details.fields == ["key.scopes"]
    assert list_all(admin, 10, org_id=org.id)[0] == [created.key.id]
    # A publishable key is no admin credential.
    expect_error(
        lambda: get_key_as(harness, created.api_key, created.key.id),
        grpc.StatusCode.PERMISSION_DENIED,
        "INSUFFICIENT_SCOPE",
    )


def test_expiry_follows_the_organization_policy(harness: Harness) -> None:
    admin = harness.admin()
    org = admin.create_org(max_keys_per_service_account=5)
    account = admin.create_principal(org.id)
    default = admin.create_key(org.id, account.id, ["a:read"], ttl_days=0).key
    assert abs(lifetime(default) - timedelta(days=90)) < timedelta(seconds=1)
    week = admin.create_key(org.id, account.id, ["a:read"], ttl_days=7).key
    assert abs(lifetime(week) - timedelta(days=7)) < timedelta(seconds=1)
    for ttl in (366, -1):
        details = expect_error(
            partial(admin.create_key, org.id, account.id, ["a:read"], ttl_days=ttl),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
        )
        assert details.fields == ["ttl_days"]

    strict = admin.create_org("Strict", max_expiry_days=30, default_expiry_days=30)
    robot = admin.create_principal(strict.id)
    details = expect_error(
        lambda: admin.create_key(strict.id, robot.id, ["a:read"], ttl_days=31),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    assert details.fields == ["ttl_days"]
    assert list_all(admin, 10, org_id=strict.id)[0] == []
    month = admin.create_key(strict.id, robot.id, ["a:read"], ttl_days=30).key
    assert abs(lifetime(month) - timedelta(days=30)) < timedelta(seconds=1)


def test_quota_counts_active_keys_per_user(harness: Harness) -> None:
    admin = harness.admin()
    org = admin.create_org(max_keys_per_user=1)
    user = admin.create_principal(org.id, USER, "alice")
    other = admin.create_principal(org.id, USER, "bob")
    first = admin.create_key(org.id, user.id, ["a:read"])
    expect_error(
        lambda: admin.create_key(org.id, user.id, ["a:read"]),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "QUOTA_EXCEEDED",
    )
    # The quota is per principal.
    assert admin.create_key(org.id, other.id, ["a:read"]).api_key
    assert list_all(admin, 10, org_id=org.id, principal_id=user.id)[0] == [first.key.id]

    revoke(admin, first.key.id)
    second = admin.create_key(org.id, user.id, ["a:read"])
    assert second.api_key and second.key.id != first.key.id
    expect_error(
        lambda: admin.create_key(org.id, user.id, ["a:read"]),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "QUOTA_EXCEEDED",
    )


def test_watch_key_events_streams_changes_in_cursor_order(harness: Harness) -> None:
    admin = harness.admin()
    org = admin.create_org(max_keys_per_service_account=5)
    other_org = admin.create_org("Other")
    account = admin.create_principal(org.id)
    other_account = admin.create_principal(other_org.id)

    stream = admin.keys.WatchKeyEvents(
        key_service_pb2.WatchKeyEventsRequest(org_id=org.id), metadata=admin.metadata, timeout=20
    )
    try:
        # Changes made while the stream is open arrive, and only this organization's.
        admin.create_key(other_org.id, other_account.id, ["a:read"])
        key = admin.create_key(org.id, account.id, ["a:read"]).key
        created = next(stream).event
        assert (created.type, created.key.id) == (key_service_pb2.KEY_EVENT_TYPE_CREATED, key.id)
        assert created.key.state == key_service_pb2.KEY_STATE_ACTIVE and created.HasField("time")

        update(admin, key_service_pb2.Key(id=key.id, display_name="renamed"), "display_name")
        updated = next(stream).event
        assert (updated.type, updated.key.id) == (key_service_pb2.KEY_EVENT_TYPE_UPDATED, key.id)
        assert updated.key.display_name == "renamed"

        revoke(admin, key.id, "done")
        revoked = next(stream).event
        assert (revoked.type, revoked.key.id) == (key_service_pb2.KEY_EVENT_TYPE_REVOKED, key.id)
        assert revoked.key.state == key_service_pb2.KEY_STATE_REVOKED and revoked.key.revoke_reason == "done"
        assert created.cursor < updated.cursor < revoked.cursor
    finally:
        stream.cancel()
    try:
        next(stream)
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.CANCELLED
    else:
        raise AssertionError("a cancelled stream yielded another event")

    # Resuming after the CREATED cursor replays only the later events, then waits for new ones.
    resumed = admin.keys.WatchKeyEvents(
        key_service_pb2.WatchKeyEventsRequest(org_id=org.id, after_cursor=created.cursor),
        metadata=admin.metadata,
        timeout=20,
    )
    try:
        replayed = [next(resumed).event for _ in range(2)]
        assert [(e.cursor, e.type) for e in replayed] == [
            (updated.cursor, key_service_pb2.KEY_EVENT_TYPE_UPDATED),
            (revoked.cursor, key_service_pb2.KEY_EVENT_TYPE_REVOKED),
        ]
        admin.keys.DeleteKey(key_service_pb2.DeleteKeyRequest(key_id=key.id), metadata=admin.metadata)
        deleted = next(resumed).event
        assert (deleted.type, deleted.key.id) == (key_service_pb2.KEY_EVENT_TYPE_DELETED, key.id)
        assert deleted.cursor > revoked.cursor
    finally:
        resumed.cancel()

    # After the last cursor nothing is replayed: the first event is the next change.
    tail = admin.keys.WatchKeyEvents(
        key_service_pb2.WatchKeyEventsRequest(org_id=org.id, after_cursor=deleted.cursor),
        metadata=admin.metadata,
        timeout=20,
    )
    try:
        newer = admin.create_key(org.id, account.id, ["a:read"]).key
        event = next(tail).event
        assert (event.type, event.key.id) == (key_service_pb2.KEY_EVENT_TYPE_CREATED, newer.id)
        assert event.cursor > deleted.cursor
    finally:
        tail.cancel()


def test_watch_key_events_checks_the_caller(harness: Harness) -> None:
    admin = harness.admin()
    org_id, _, key = admin.tenant_admin()
    other = admin.create_org("Other")
    tenant = harness.admin(key)

    def first_event(org: str, after: int = 0) -> None:
        stream = tenant.keys.WatchKeyEvents(
            key_service_pb2.WatchKeyEventsRequest(org_id=org, after_cursor=after),
            metadata=tenant.metadata,
            timeout=10,
        )
        try:
            next(stream)
        finally:
            stream.cancel()

    expect_error(lambda: first_event(other.id), grpc.StatusCode.NOT_FOUND, "NOT_FOUND")
    details = expect_error(
        lambda: first_event(org_id, -1), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"
    )
    assert details.fields == ["after_cursor"]
    # The tenant's own organization streams (its admin key's creation is the first event).
    first_event(org_id)
