"""Quotas hold under concurrency: the principal lock (BEGIN IMMEDIATE / SELECT ... FOR UPDATE)."""

from __future__ import annotations

import grpc

from identity.v1 import key_service_pb2, principal_service_pb2
from tests.conftest import Harness
from tests.helpers import details_of

ROUNDS = 10
CONCURRENT = 20


def test_concurrent_creates_never_exceed_a_quota_of_one(harness: Harness) -> None:
    admin = harness.admin()
    org = admin.create_org("Racers", max_keys_per_user=1)
    for round_number in range(ROUNDS):
        user = admin.create_principal(
            org.id, principal_service_pb2.PRINCIPAL_KIND_USER, f"user {round_number}"
        )
        request = key_service_pb2.CreateKeyRequest(
            org_id=org.id, principal_id=user.id, display_name="race", scopes=["inventory:read"]
        )
        # Futures put all twenty calls in flight at once on the server's thread pool.
        calls = [admin.keys.CreateKey.future(request, metadata=admin.metadata) for _ in range(CONCURRENT)]
        created, refused = [], []
        for call in calls:
            try:
                created.append(call.result(timeout=60))
            except grpc.RpcError as error:
                refused.append(details_of(error))
        assert len(created) == 1, f"round {round_number}: {len(created)} keys created"
        assert len(refused) == CONCURRENT - 1
        assert {(d.code, d.reason) for d in refused} == {
            (grpc.StatusCode.RESOURCE_EXHAUSTED, "QUOTA_EXCEEDED")
        }
        listed = admin.keys.ListKeys(
            key_service_pb2.ListKeysRequest(org_id=org.id, principal_id=user.id), metadata=admin.metadata
        ).keys
        assert [k.id for k in listed] == [created[0].key.id]
