from __future__ import annotations

from grpc_health.v1 import health_pb2, health_pb2_grpc

from identity.v1 import authorization_service_pb2
from tests.conftest import Harness


def test_whoami_reports_the_platform_caller(harness: Harness) -> None:
    admin = harness.admin()
    me = admin.authz.WhoAmI(authorization_service_pb2.WhoAmIRequest(), metadata=admin.metadata)
    assert me.platform and me.org_id == harness.platform_org_id and list(me.scopes) == ["*"]


def test_tenant_admin_can_create_a_key(harness: Harness) -> None:
    org_id, _, key = harness.admin().tenant_admin()
    tenant = harness.admin(key)
    user = tenant.create_principal(org_id, name="alice")
    assert user.org_id == org_id
    created = tenant.create_key(org_id, user.id, ["admin:apikeys"])
    assert created.api_key.startswith("idk_live_") and created.key.last4 == created.api_key[-4:]


def test_health_reports_serving(harness: Harness) -> None:
    health = health_pb2_grpc.HealthStub(harness.channel)
    for service in ("", "identity.v1.KeyService"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
