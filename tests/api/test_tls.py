"""TLS and mutual TLS on the gRPC port: in process, with ``identity serve --workers 2``, and for
the client commands. Certificates are made by each run (tests/pki.py)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from identity.config import Settings
from identity.v1 import authorization_service_pb2, authorization_service_pb2_grpc
from tests.conftest import Harness
from tests.helpers import auth
from tests.pki import Authority, Issued
from tests.servers import IDENTITY, bootstrapped, identity_serve

# TLS does not depend on the database: SQLite only.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@dataclass(frozen=True)
class Pki:
    """Our CA with a server and a client certificate, and a stranger CA with a client certificate."""

    ca: Authority
    server: Issued
    client: Issued
    stranger: Authority
    stranger_client: Issued

    def client_credentials(
        self, client: Issued | None = None, ca: Authority | None = None
    ) -> grpc.ChannelCredentials:
        """Trusting ``ca`` (ours by default), presenting ``client`` if given."""
        return grpc.ssl_channel_credentials(
            root_certificates=(ca or self.ca).cert,
            private_key=client.key if client else None,
            certificate_chain=client.cert if client else None,
        )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca, stranger = Authority(folder, "ours"), Authority(folder, "stranger")
    return Pki(
        ca,
        ca.issue("server", server=True),
        ca.issue("client", server=False),
        stranger,
        stranger.issue("client", server=False),
    )


@pytest.fixture
def mutual() -> bool:
    """Whether the server requires client certificates (parametrize to change)."""
    return False


@pytest.fixture
def settings(settings: Settings, pki: Pki, mutual: bool) -> Settings:
    """The test server's settings, with TLS, and with our CA for client certificates when ``mutual``."""
    return settings.with_overrides(
        tls_cert_file=str(pki.server.cert_file),
        tls_key_file=str(pki.server.key_file),
        tls_client_ca_file=str(pki.ca.cert_file) if mutual else None,
    )


def tls_env(pki: Pki) -> dict[str, str]:
    return {
        "IDENTITY_TLS_CERT_FILE": str(pki.server.cert_file),
        "IDENTITY_TLS_KEY_FILE": str(pki.server.key_file),
        "IDENTITY_TLS_CLIENT_CA_FILE": str(pki.ca.cert_file),
    }


def who_am_i(channel: grpc.Channel, api_key: str) -> grpc.StatusCode:
    """The status of a WhoAmI as ``api_key`` (a platform key answers OK when the call gets through)."""
    try:
        me = authorization_service_pb2_grpc.AuthorizationServiceStub(channel).WhoAmI(
            authorization_service_pb2.WhoAmIRequest(), metadata=auth(api_key), timeout=10
        )
    except grpc.RpcError as error:
        return error.code()
    assert me.platform
    return grpc.StatusCode.OK


def test_tls_serves_clients_that_trust_its_ca_and_refuses_the_others(harness: Harness, pki: Pki) -> None:
    key = harness.platform_key
    with grpc.secure_channel(harness.address, pki.client_credentials()) as channel:
        assert who_am_i(channel, key) == grpc.StatusCode.OK
    with grpc.insecure_channel(harness.address) as plaintext:
        assert who_am_i(plaintext, key) == grpc.StatusCode.UNAVAILABLE
    with grpc.secure_channel(harness.address, pki.client_credentials(ca=pki.stranger)) as untrusting:
        assert who_am_i(untrusting, key) == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("mutual", [True])
def test_mutual_tls_admits_only_clients_with_a_certificate_from_its_ca(harness: Harness, pki: Pki) -> None:
    key = harness.platform_key
    presented = {
        "no certificate": pki.client_credentials(),
        "a stranger's": pki.client_credentials(pki.stranger_client),
        "ours": pki.client_credentials(pki.client),
    }
    statuses = {}
    for name, credentials in presented.items():
        with grpc.secure_channel(harness.address, credentials) as channel:
            statuses[name] = who_am_i(channel, key)
    assert statuses == {
        "no certificate": grpc.StatusCode.UNAVAILABLE,
        "a stranger's": grpc.StatusCode.UNAVAILABLE,
        "ours": grpc.StatusCode.OK,
    }


@pytest.mark.parametrize("mutual", [True])
def test_client_commands_speak_mutual_tls(harness: Harness, pki: Pki) -> None:
    def exchange(*tls: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                IDENTITY,
                "token",
                "exchange",
                "--server",
                harness.address,
                "--ca-file",
                str(pki.ca.cert_file),
                *tls,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "IDENTITY_API_KEY": harness.platform_key},
            check=False,
        )

    done = exchange("--cert-file", str(pki.client.cert_file), "--key-file", str(pki.client.key_file))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["token_type"] == "Bearer"
    refused = exchange()
    assert refused.returncode == 1 and "UNAVAILABLE" in refused.stderr, refused.stderr
    assert harness.platform_key not in refused.stderr


def test_serve_with_two_workers_speaks_mutual_tls(database_url: str, tmp_path: Path, pki: Pki) -> None:
    key = bootstrapped(database_url).api_key
    credentials = pki.client_credentials(pki.client)
    with identity_serve(
        database_url, tmp_path / "serve.log", workers=2, env=tls_env(pki), credentials=credentials
    ) as serving:
        serving.wait_serving()
        # A new connection each time, until both workers have answered one (their JSON log lines say).
        deadline = time.monotonic() + 30
        while len(serving.rpc_pids("WhoAmI")) < 2 and time.monotonic() < deadline:
            with grpc.secure_channel(
                serving.address, credentials, options=[("grpc.use_local_subchannel_pool", 1)]
            ) as channel:
                assert who_am_i(channel, key) == grpc.StatusCode.OK
        assert len(serving.rpc_pids("WhoAmI")) == 2, serving.describe()
        with grpc.insecure_channel(serving.address) as plaintext:
            assert who_am_i(plaintext, key) == grpc.StatusCode.UNAVAILABLE
