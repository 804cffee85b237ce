"""``identity serve`` logs JSON lines by default: per RPC its method, status, reason, duration,
peer and caller, never a presented secret; and a lone worker serves its own metrics."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from identity.app.keys import IssuedKey
from identity.v1 import (
    authorization_service_pb2,
    authorization_service_pb2_grpc,
    token_service_pb2,
    token_service_pb2_grpc,
)
from tests.conftest import fresh_database
from tests.helpers import auth, expect_error, mistyped
from tests.servers import ServeProcess, bootstrapped, free_port, identity_serve


@dataclass
class Served:
    """A single-worker server, what was presented to it, and where its metrics are."""

    serving: ServeProcess
    platform: IssuedKey
    wrong_key: str
    token: str
    metrics_url: str


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One allowed and one refused WhoAmI, an exchange and a Check of its token, on a fresh server."""
    metrics = f"127.0.0.1:{free_port()}"
    with fresh_database("sqlite", tmp_path_factory, migrated=True) as url:
        platform = bootstrapped(url)
        wrong_key = mistyped(platform.api_key)
        log_path = tmp_path_factory.mktemp("logs") / "serve.log"
        with identity_serve(url, log_path, env={"IDENTITY_METRICS_LISTEN": metrics}) as serving:
            serving.wait_serving()
            with serving.channel() as channel:
                authz = authorization_service_pb2_grpc.AuthorizationServiceStub(channel)
                authz.WhoAmI(authorization_service_pb2.WhoAmIRequest(), metadata=auth(platform.api_key))
                expect_error(
                    lambda: authz.WhoAmI(authorization_service_pb2.WhoAmIRequest(), metadata=auth(wrong_key)),
                    grpc.StatusCode.UNAUTHENTICATED,
                    "INVALID_API_KEY",
                )
                token = (
                    token_service_pb2_grpc.TokenServiceStub(channel)
                    .ExchangeApiKey(token_service_pb2.ExchangeApiKeyRequest(api_key=platform.api_key))
                    .access_token
                )
                check = authz.Check(
                    authorization_service_pb2.CheckRequest(credential=token, permissions=["a:b"])
                )
                assert check.allowed
            yield Served(serving, platform, wrong_key, token, f"http://{metrics}/metrics")


def test_every_line_is_json_and_each_rpc_says_what_happened(served: Served) -> None:
    records = served.serving.log_records()  # fails on any line that is not a JSON object
    assert any(r["logger"] == "identity" and r["message"].startswith("serving on") for r in records)
    rpcs = {(r["method"].rpartition("/")[2], r["code"]): r for r in records if r["logger"] == "identity.rpc"}
    assert set(rpcs) == {
        ("WhoAmI", "OK"),
        ("WhoAmI", "UNAUTHENTICATED"),
        ("ExchangeApiKey", "OK"),
        ("Check", "OK"),
    }
    allowed, refused = rpcs["WhoAmI", "OK"], rpcs["WhoAmI", "UNAUTHENTICATED"]
    key = served.platform.key
    assert allowed["method"] == "/identity.v1.AuthorizationService/WhoAmI"
    assert (allowed["level"], allowed["message"], allowed["reason"]) == ("INFO", "rpc", "")
    assert (allowed["principal_id"], allowed["key_id"]) == (key.principal_id, key.id)
    assert (refused["reason"], refused["principal_id"], refused["key_id"]) == ("INVALID_API_KEY", "", "")
    for record in (allowed, refused):
        assert record["peer"].startswith("ipv4:127.0.0.1:")
        assert isinstance(record["duration_ms"], float) and 0 < record["duration_ms"] < 10_000
        assert datetime.fromisoformat(record["time"]).utcoffset() is not None
        assert record["pid"] == served.serving.process.pid


def test_no_line_holds_a_presented_key_or_token(served: Served) -> None:
    text = served.serving.log_path.read_text()
    assert "identity.rpc" in text  # the log is there to search
    for presented in (served.platform.api_key, served.wrong_key, served.token):
        assert presented not in text
    for key in (served.platform.api_key, served.wrong_key):
        assert key.rpartition("_")[2] not in text  # nor a key's secret part alone
    assert served.token.rpartition(".")[2] not in text  # nor the token's signature


def test_a_lone_worker_serves_its_own_metrics(served: Served) -> None:
    with urllib.request.urlopen(served.metrics_url, timeout=10) as response:
        families = {f.name: f for f in text_string_to_metric_families(response.read().decode())}
    calls = {
        (s.labels["method"].rpartition("/")[2], s.labels["code"]): s.value
        for s in families["identity_rpcs"].samples
    }
    assert calls == {
        ("WhoAmI", "OK"): 1,
        ("WhoAmI", "UNAUTHENTICATED"): 1,
        ("ExchangeApiKey", "OK"): 1,
        ("Check", "OK"): 1,
    }
    assert [s.value for s in families["identity_workers_reporting"].samples] == [1]
    assert {s.labels["worker"] for s in families["identity_argon2_capacity"].samples} == {"0"}
