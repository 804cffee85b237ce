"""``/metrics`` over HTTP: every worker's snapshot in Prometheus' text format.

Counters and histograms are summed over the workers (their labels say what, not who), so the
figures of one replica stay one series each however many workers it runs. Gauges describe one
process each and carry a ``worker`` label (0 to N-1).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import accumulate

from prometheus_client import start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from identity.metrics.rpcs import LATENCY_BOUNDS, RpcTotals
from identity.metrics.snapshot import WorkerSnapshot

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerReport:
    """A worker's snapshot: taken for this scrape (``current``), or the last it gave before it went.

    A gone worker's counters stay in the sums, so they never go back; its gauges are left out.
    """

    worker: int
    snapshot: WorkerSnapshot
    current: bool


Gather = Callable[[], Sequence[WorkerReport]]


class SnapshotCollector(Collector):
    """Turns the workers' reports into metric families at each scrape."""

    def __init__(self, gather: Gather) -> None:
        """Ask ``gather`` for the reports at each scrape."""
        self._gather = gather

    def collect(self) -> Iterable[Metric]:
        """Every metric family, from one gathering of the reports."""
        reports = self._gather()
        yield from _rpc_families(reports)
        lookups = CounterMetricFamily(
            "identity_cache_lookups",
            "Cache lookups by cache (secrets, tokens, key_states, allows, answers) and result (hit, miss).",
            labels=["cache", "result"],
        )
        summed: dict[str, tuple[int, int]] = {}
        for report in reports:
            for cache, (hits, misses) in report.snapshot.lookups.items():
                was_hits, was_misses = summed.get(cache, (0, 0))
                summed[cache] = (was_hits + hits, was_misses + misses)
        for cache, (hits, misses) in sorted(summed.items()):
            lookups.add_metric([cache, "hit"], hits)
            lookups.add_metric([cache, "miss"], misses)
        yield lookups
        yield CounterMetricFamily(
            "identity_argon2_refusals",
            "argon2id hashes refused at once (RATE_LIMITED) because the pool and its queue were full.",
            value=sum(report.snapshot.argon2_refused for report in reports),
        )
        yield CounterMetricFamily(
            "identity_argon2_hashes",
            "argon2id hashes and verifications completed.",
            value=sum(report.snapshot.argon2_done for report in reports),
        )
        yield CounterMetricFamily(
            "identity_argon2_cpu_seconds",
            "CPU seconds the argon2 pool's threads spent hashing and verifying.",
            value=sum(report.snapshot.argon2_cpu_seconds for report in reports),
        )
        current = [report for report in reports if report.current]
        yield from _gauges(current)
        yield GaugeMetricFamily(
            "identity_workers_reporting", "Worker processes that answered this scrape.", value=len(current)
        )


def _rpc_families(reports: Sequence[WorkerReport]) -> Iterable[Metric]:
    rpcs = RpcTotals()
    for report in reports:
        rpcs.add(report.snapshot.rpcs)
    calls = CounterMetricFamily(
        "identity_rpcs", "RPCs served, by method and gRPC status code.", labels=["method", "code"]
    )
    for (method, code), count in sorted(rpcs.calls.items()):
        calls.add_metric([method, code], count)
    yield calls
    latency = HistogramMetricFamily(
        "identity_rpc_duration_seconds",
        "Time from a call reaching the service to its answer, by method.",
        labels=["method"],
    )
    bounds = [str(bound) for bound in LATENCY_BOUNDS] + ["+Inf"]
    for method, buckets in sorted(rpcs.buckets.items()):
        cumulative = list(accumulate(buckets))
        latency.add_metric([method], list(zip(bounds, cumulative, strict=True)), rpcs.seconds[method])
    yield latency


# Per-process gauges: name, help, and the snapshot field they show.
_GAUGES = (
    ("identity_argon2_in_use", "argon2id hashes admitted now, running or queued.", "argon2_in_use"),
    ("identity_argon2_threads", "argon2id hashes that can run at once.", "argon2_threads"),
    (
        "identity_argon2_capacity",
        "argon2id hashes that can be admitted at once: threads plus queue.",
        "argon2_capacity",
    ),
    (
        "identity_changefeed_lag_seconds",
        "Seconds since the key-state cache last caught up with the end of the key change log.",
        "changefeed_lag_seconds",
    ),
    (
        "identity_changefeed_cursor",
        "The newest key change log entry the key-state cache has applied.",
        "changefeed_cursor",
    ),
)


def _gauges(reports: Sequence[WorkerReport]) -> Iterable[Metric]:
    for name, documentation, field in _GAUGES:
        family = GaugeMetricFamily(name, documentation, labels=["worker"])
        for report in reports:
            family.add_metric([str(report.worker)], getattr(report.snapshot, field))
        yield family


def serve_metrics(listen: str, gather: Gather) -> Callable[[], None]:
    """Serve ``/metrics`` on ``listen`` (``HOST:PORT``) on a thread of its own; return what stops it."""
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise SystemExit(
            f"IDENTITY_METRICS_LISTEN must be HOST:PORT (or empty for no metrics), got {listen!r}"
        )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(gather))
    try:
        server, _thread = start_http_server(int(port), host.strip("[]"), registry)
    except OSError as error:
        raise SystemExit(
            f"cannot serve metrics on {listen}: {error.strerror}; "
            "set IDENTITY_METRICS_LISTEN to another HOST:PORT, or empty for no metrics"
        ) from None
    log.info("metrics on http://%s/metrics", listen)

    def stop() -> None:
        server.shutdown()
        server.server_close()

    return stop
