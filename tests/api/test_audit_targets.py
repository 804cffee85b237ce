"""Audit rows name a refused request's target only when it is a well-formed id: anything else
(a pasted key, a NUL, a kilobyte) is left out, and the row is still written. PostgreSQL once
refused over-long and NUL-holding targets, which lost the row or, for the batched exchange and
check events, every event queued with it."""

from __future__ import annotations

import grpc
import pytest

from identity.v1 import audit_service_pb2, key_service_pb2, token_service_pb2, token_service_pb2_grpc
from tests.api import test_bad_input
from tests.api.test_bad_input import World

world = test_bad_input.world  # the fixture: a platform admin, an organization, a key

ODD_KEY_IDS = [
    "key_" + "a" * 61,  # one character over the id length
    "key_" + "b" * 1000,  # as long as the request limits allow
    "key_\x00nul",
    "key_\r\nline",
    "key_\u2028sep",
    "ключ_ü",
    "key_'; --",
    "key_\\x00",
]


def audited(world: World, action: str) -> list[audit_service_pb2.AuditEvent]:
    """Every audit event of ``action``, once the batched ones are written."""
    world.harness.server.writer.flush()
    request = audit_service_pb2.ListAuditEventsRequest(action=action, page_size=1000)
    return list(world.admin.audit.ListAuditEvents(request, metadata=world.md).events)


def test_refused_exchanges_naming_no_id_are_audited_without_a_target(world: World) -> None:
    tokens = token_service_pb2_grpc.TokenServiceStub(world.harness.channel)
    claimed = [*ODD_KEY_IDS, world.api_key]  # a key pasted where its id belongs
    for key_id in claimed:
        request = token_service_pb2.ExchangeApiKeyWithIdRequest(key_id=key_id, api_key=world.api_key)
        with pytest.raises(grpc.RpcError):
            tokens.ExchangeApiKeyWithId(request)
    good = token_service_pb2.ExchangeApiKeyWithIdRequest(key_id=world.key.id, api_key=world.api_key)
    tokens.ExchangeApiKeyWithId(good)  # queued with the refusals: written with them
    targets = [e.target for e in audited(world, "token.exchange")]
    assert sorted(targets) == sorted([world.key.id, *[""] * len(claimed)])
    assert world.api_key not in str(audited(world, "token.exchange"))


def test_refused_admin_actions_naming_no_id_are_audited_without_a_target(world: World) -> None:
    for key_id in ODD_KEY_IDS:
        with pytest.raises(grpc.RpcError):
            world.admin.keys.RevokeKey(key_service_pb2.RevokeKeyRequest(key_id=key_id), metadata=world.md)
    # An organization id that is no id: the refusal is filed under the caller's organization.
    odd_org = "org_" + "c" * 500
    create = key_service_pb2.CreateKeyRequest(
        org_id=odd_org, principal_id=world.principal_id, display_name="k", scopes=["inventory:read"]
    )
    with pytest.raises(grpc.RpcError):
        world.admin.keys.CreateKey(create, metadata=world.md)
    revokes = audited(world, "key.revoke")
    assert [e.target for e in revokes] == [""] * len(ODD_KEY_IDS)
    assert {e.reason for e in revokes} == {"INVALID_ARGUMENT"}
    (refused_create,) = [e for e in audited(world, "key.create") if e.reason == "INVALID_ARGUMENT"]
    assert refused_create.org_id == world.harness.platform_org_id
    assert refused_create.target == world.principal_id  # a CreateKey's target is the principal
