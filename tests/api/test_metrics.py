"""``/metrics`` of ``identity serve --workers 2``: one port for both workers, exact counts summed
over them, and each worker's gauges."""

from __future__ import annotations

import time
import urllib.request
from collections import defaultdict
from functools import partial
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from identity.v1 import authorization_service_pb2, authorization_service_pb2_grpc
from tests.helpers import Admin, auth, expect_error
from tests.servers import bootstrapped, free_port, identity_serve

Shown = dict[str, list[tuple[dict[str, str], float]]]


def scrape(url: str) -> Shown:
    """Every sample at ``url``: metric name -> (labels, value) pairs."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    shown: Shown = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            shown[sample.name].append((sample.labels, sample.value))
    return shown


def by(shown: Shown, name: str, *labels: str) -> dict[tuple[str, ...], float]:
    """The samples of ``name`` keyed by the values of ``labels`` (a method by its last segment)."""
    return {
        tuple(values[label].rpartition("/")[2] for label in labels): value for values, value in shown[name]
    }


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_two_workers_are_scraped_on_one_port(database_url: str, tmp_path: Path) -> None:
    platform = bootstrapped(database_url).api_key
    metrics = f"http://127.0.0.1:{free_port()}/metrics"
    env = {"IDENTITY_METRICS_LISTEN": metrics.split("/")[2], "IDENTITY_ARGON2_THREADS": "1"}
    with identity_serve(database_url, tmp_path / "serve.log", workers=2, env=env) as serving:
        serving.wait_serving()
        with serving.channel() as channel:  # one connection, so one worker: cold, then warm
            admin = Admin(channel, platform)
            org = admin.create_org()
            account = admin.create_principal(org.id)
            key = admin.create_key(org.id, account.id, ["stock:read"]).api_key
            for permission in ["stock:read"] * 5 + ["stock:write"] * 2:
                decision = admin.authz.Check(
                    authorization_service_pb2.CheckRequest(credential=key, permissions=[permission])
                )
                assert decision.allowed == (permission == "stock:read")
        # A new connection each call, until both workers have answered WhoAmI (their log lines say).
        whoami = 0
        deadline = time.monotonic() + 30
        while len(serving.rpc_pids("WhoAmI")) < 2 and time.monotonic() < deadline:
            with grpc.insecure_channel(
                serving.address, options=[("grpc.use_local_subchannel_pool", 1)]
            ) as fresh:
                who = partial(
                    authorization_service_pb2_grpc.AuthorizationServiceStub(fresh).WhoAmI,
                    authorization_service_pb2.WhoAmIRequest(),
                )
                who(metadata=auth(platform))
                whoami += 1
                wrong = partial(who, metadata=auth(key + "x"))
                expect_error(wrong, grpc.StatusCode.UNAUTHENTICATED, "INVALID_API_KEY")
        assert len(serving.rpc_pids("WhoAmI")) == 2, serving.describe()
        # Both workers follow the change log: wait until both have applied the changes made above.
        deadline = time.monotonic() + 10
        shown = scrape(metrics)
        while len(set(by(shown, "identity_changefeed_cursor", "worker").values())) != 1:
            assert time.monotonic() < deadline, shown["identity_changefeed_cursor"]
            time.sleep(0.1)
            shown = scrape(metrics)

    assert by(shown, "identity_rpcs_total", "method", "code") == {
        ("CreateOrganization", "OK"): 1,
        ("CreatePrincipal", "OK"): 1,
        ("CreateKey", "OK"): 1,
        ("Check", "OK"): 7,  # a denial is an answer
        ("WhoAmI", "OK"): whoami,
        ("WhoAmI", "UNAUTHENTICATED"): whoami,
    }
    counts = by(shown, "identity_rpc_duration_seconds_count", "method")
    assert counts[("Check",)] == 7 and counts[("WhoAmI",)] == 2 * whoami
    sums = by(shown, "identity_rpc_duration_seconds_sum", "method")
    assert 0 < sums[("Check",)] < 7 * 5
    assert by(shown, "identity_rpc_duration_seconds_bucket", "method", "le")[("Check", "+Inf")] == 7

    lookups = by(shown, "identity_cache_lookups_total", "cache", "result")
    # The first Check was judged and its allow and answer remembered; the next four got the
    # remembered answer to their same request bytes, never reaching the judge. Denials are
    # never remembered.
    assert (lookups[("answers", "hit")], lookups[("answers", "miss")]) == (4, 3)
    assert (lookups[("allows", "hit")], lookups[("allows", "miss")]) == (0, 3)
    # Every presented key is looked up once among verified secrets: 3 admin calls, 3 Checks
    # that were judged, and each WhoAmI; a wrong key is a miss.
    secrets = lookups[("secrets", "hit")] + lookups[("secrets", "miss")]
    assert secrets == 3 + 3 + 2 * whoami and lookups[("secrets", "miss")] >= whoami
    assert lookups[("key_states", "hit")] > 0

    workers = {"0", "1"}
    assert by(shown, "identity_workers_reporting") == {(): 2}
    assert by(shown, "identity_argon2_capacity", "worker") == {(w,): 1 + 64 for w in workers}
    assert by(shown, "identity_argon2_in_use", "worker") == {(w,): 0 for w in workers}
    assert by(shown, "identity_argon2_refusals_total") == {(): 0}
    # At least the new key's hash, and the platform key's verification in each worker.
    assert by(shown, "identity_argon2_hashes_total")[()] >= 3
    assert by(shown, "identity_argon2_cpu_seconds_total")[()] > 0
    lag = by(shown, "identity_changefeed_lag_seconds", "worker")
    assert set(lag) == {(w,) for w in workers} and all(0 <= seconds < 2 for seconds in lag.values())
    assert set(by(shown, "identity_changefeed_cursor", "worker").values()) != {0}
