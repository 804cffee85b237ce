"""Fail closed: without a database every call is UNAVAILABLE, never an allow, and health says so."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from identity.config import Settings
from identity.crypto import apikeys
from identity.domain.model import KeyKind
from identity.server import IdentityServer, build_server
from identity.v1 import key_service_pb2
from tests.conftest import TEST_ARGON2, TEST_KEK
from tests.helpers import Admin, expect_error

# Nothing listens on port 1: every connection attempt is refused at once.
UNREACHABLE = "postgresql+psycopg://postgres@127.0.0.1:1/identity"


@pytest.fixture
def server_without_database() -> Iterator[tuple[IdentityServer, int]]:
    settings = Settings(database_url=UNREACHABLE, listen="127.0.0.1:0", argon2=TEST_ARGON2, kek=TEST_KEK)
    server, port = build_server(settings)
    server.start()
    yield server, port
    server.stop(0)


def test_calls_are_unavailable_and_health_not_serving(
    server_without_database: tuple[IdentityServer, int],
) -> None:
    _, port = server_without_database
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.NOT_SERVING
        # A key with a valid checksum gets past the format check and needs the database.
        key = apikeys.generate(KeyKind.SECRET, "live").plaintext
        admin = Admin(channel, key)
        expect_error(
            lambda: admin.keys.ListKeys(
                key_service_pb2.ListKeysRequest(org_id="org_x"), metadata=admin.metadata
            ),
            grpc.StatusCode.UNAVAILABLE,
            "UNAVAILABLE",
        )
