"""The ``identity`` command line as an operator runs it."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet

from identity.v1 import token_service_pb2, token_service_pb2_grpc
from tests.conftest import Harness

IDENTITY = str(Path(sys.executable).parent / "identity")


def run(args: list[str], env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [IDENTITY, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
        cwd=cwd,
        check=False,
    )


def test_bootstrap_prints_the_key_once_and_refuses_a_second_run(tmp_path: Path) -> None:
    env = {
        "IDENTITY_DATABASE_URL": f"sqlite:///{tmp_path / 'identity.db'}",
        "IDENTITY_KEK_FILE": str(tmp_path / "kek"),
    }
    first = run(["bootstrap"], env, tmp_path)
    assert first.returncode == 0, first.stderr
    key = first.stdout.strip()
    assert key.startswith("idk_live_") and "\n" not in key
    assert key not in first.stderr
    second = run(["bootstrap"], env, tmp_path)
    assert second.returncode == 1 and second.stdout == ""
    assert "bootstrapped already" in second.stderr and key not in second.stderr


def test_token_exchange_command(harness: Harness) -> None:
    done = run(
        ["token", "exchange", "--server", harness.address, "--scope", "admin:apikeys", "--lifetime", "120"],
        {"IDENTITY_API_KEY": harness.platform_key},
    )
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout)
    assert (
        reply["token_type"] == "Bearer"
        and reply["scopes"] == ["admin:apikeys"]
        and reply["expires_in"] == "120"
    )
    jwks = token_service_pb2_grpc.TokenServiceStub(harness.channel).GetJwks(
        token_service_pb2.GetJwksRequest()
    )
    decoded = jose_jwt.decode(reply["access_token"], KeySet.import_key_set(json.loads(jwks.jwks_json)))
    assert decoded.claims["scope"] == "admin:apikeys"
    refused = run(["token", "exchange", "--server", harness.address], {"IDENTITY_API_KEY": "idk_live_wrong"})
    assert refused.returncode == 1 and "UNAUTHENTICATED" in refused.stderr


def test_embedded_kek_file_is_private_and_private_keys_are_sealed(tmp_path: Path, harness: Harness) -> None:
    from identity.crypto.signing import load_kek

    kek_file = tmp_path / "identity.kek"
    kek = load_kek("", str(kek_file))
    assert stat.S_IMODE(kek_file.stat().st_mode) == 0o600 and load_kek("", str(kek_file)) == kek
    token_service_pb2_grpc.TokenServiceStub(harness.channel).GetJwks(token_service_pb2.GetJwksRequest())
    with harness.db.engine.connect() as connection:
        sealed = [row[0] for row in connection.exec_driver_sql("SELECT sealed_private_key FROM signing_keys")]
    assert sealed
    for value in sealed:
        # Without the KEK the stored bytes are no private key in any encoding.
        with pytest.raises(ValueError):
            serialization.load_der_private_key(base64.b64decode(value), password=None)
        assert "PRIVATE KEY" not in value


def test_keys_expiring_lists_what_expires_within_the_window(harness: Harness) -> None:
    admin = harness.admin()
    org_id, account, tenant_key = admin.tenant_admin(max_keys_per_service_account=5)
    # A name with a tab, an escape sequence and a line break: escaped in the columns, exact in JSON.
    name = "soon\t\x1b[31m\n"
    soon = admin.create_key(org_id, account, ["stock:read"], ttl_days=3, display_name=name).key
    admin.create_key(org_id, account, ["stock:read"], ttl_days=30, display_name="later")
    base = ["keys", "expiring", "--server", harness.address]

    as_tenant = run([*base, "--within", "14d"], {"IDENTITY_API_KEY": tenant_key})
    assert as_tenant.returncode == 0, as_tenant.stderr
    lines = as_tenant.stdout.splitlines()
    assert len(lines) == 1
    assert lines[0].split("\t")[1:] == [soon.id, org_id, account, soon.prefix, "soon\\t\\x1b[31m\\n"]

    as_platform = run(
        [*base, "--within", "336h", "--all-orgs", "--json"], {"IDENTITY_API_KEY": harness.platform_key}
    )
    assert as_platform.returncode == 0, as_platform.stderr
    listed = [json.loads(line) for line in as_platform.stdout.splitlines()]
    assert [(k["id"], k["display_name"]) for k in listed] == [(soon.id, name)]
    assert tenant_key not in as_platform.stdout and "api_key" not in listed[0]

    assert (
        run([*base, "--within", "31d", "--org", org_id], {"IDENTITY_API_KEY": tenant_key}).stdout.count("\n")
        == 2  # "soon" and "later"; the tenant's admin key expires in 90 days
    )
    bad = run([*base, "--within", "two weeks"], {"IDENTITY_API_KEY": tenant_key})
    assert bad.returncode == 2 and "not a span" in bad.stderr
    missing = run([*base, "--within", "14d"], {"IDENTITY_API_KEY": ""})
    assert missing.returncode == 2 and "IDENTITY_API_KEY" in missing.stderr
    other = run(
        [*base, "--within", "14d", "--org", harness.platform_org_id], {"IDENTITY_API_KEY": tenant_key}
    )
    assert other.returncode == 1 and "NOT_FOUND" in other.stderr
