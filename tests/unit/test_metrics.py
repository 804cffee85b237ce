"""Metrics: lock-free RPC tallies and cache hit counts that lose no call, argon2 pool gauges, the
exposition of several workers' snapshots, and the parent gathering them over pipes."""

from __future__ import annotations

import multiprocessing
import sys
import threading
import time
from collections.abc import Callable

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from identity.cache.allows import AllowMemo
from identity.cache.lookups import Lookups
from identity.cache.states import KeyStateCache
from identity.cache.verified import VerifiedCredentials
from identity.crypto.pool import BoundedHasher
from identity.domain.decisions import Decision
from identity.domain.errors import IdentityError, Reason
from identity.domain.model import Change, ChangeSubject
from identity.metrics.exposition import SnapshotCollector, WorkerReport
from identity.metrics.gather import WorkerScrapes, answer_scrapes
from identity.metrics.rpcs import LATENCY_BOUNDS, RpcTally, RpcTotals
from identity.metrics.snapshot import WorkerSnapshot
from tests.unit.test_caches import live_key

CHECK = "/identity.v1.AuthorizationService/Check"
WHOAMI = "/identity.v1.AuthorizationService/WhoAmI"


def on_many_threads(count: Callable[[int], None], threads: int = 8, calls: int = 10_000) -> None:
    """Call ``count(n)`` for n in range(calls) on each of ``threads`` threads at once, switching often."""
    start = threading.Barrier(threads)

    def counting() -> None:
        start.wait()
        for n in range(calls):
            count(n)

    running = [threading.Thread(target=counting) for _ in range(threads)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: a shared tally would lose counts
    try:
        for thread in running:
            thread.start()
        for thread in running:
            thread.join()
    finally:
        sys.setswitchinterval(interval)


def test_tallies_of_many_threads_lose_no_call() -> None:
    tally = RpcTally()
    on_many_threads(lambda n: tally.record(CHECK, "OK" if n % 5 else "UNAVAILABLE", 0.00002))
    totals = tally.totals()
    assert totals.calls == {(CHECK, "OK"): 64_000, (CHECK, "UNAVAILABLE"): 16_000}
    assert totals.buckets[CHECK][0] == 80_000 and sum(totals.buckets[CHECK]) == 80_000
    assert totals.seconds[CHECK] == pytest.approx(80_000 * 0.00002)


def test_lookups_of_many_threads_lose_no_count() -> None:
    lookups = Lookups()
    on_many_threads(lambda n: lookups.count(n % 4 != 0))
    assert (lookups.hits, lookups.misses) == (60_000, 20_000)


def test_a_latency_lands_in_the_first_bucket_whose_bound_it_does_not_exceed() -> None:
    tally = RpcTally()
    for seconds in (LATENCY_BOUNDS[0], LATENCY_BOUNDS[0] * 1.01, LATENCY_BOUNDS[-1] * 2):
        tally.record(WHOAMI, "OK", seconds)
    buckets = tally.totals().buckets[WHOAMI]
    assert (buckets[0], buckets[1], buckets[-1], sum(buckets)) == (1, 1, 1, 3)


def test_caches_count_their_hits_and_misses() -> None:
    verified = VerifiedCredentials(10)
    print_ = verified.fingerprint("idk_live_secret")
    assert verified.secret(print_) is None
    verified.remember_secret(print_, "key_1", 1)
    assert verified.secret(print_) == ("key_1", 1)
    assert (verified.secret_lookups.hits, verified.secret_lookups.misses) == (1, 1)
    assert verified.token(print_) is None
    assert (verified.token_lookups.hits, verified.token_lookups.misses) == (0, 1)

    states = KeyStateCache(10)
    states.put(states.generation, live_key())
    assert states.get("key_1") is None  # never caught up with the change log: not trusted
    states.reset({}, time.monotonic(), 0)
    states.put(states.generation, live_key())
    assert states.get("key_1") is not None and states.get("key_2") is None
    assert (states.lookups.hits, states.lookups.misses) == (1, 2)

    memo: AllowMemo[Decision] = AllowMemo(states, verified.fingerprint)
    asked = memo.key("idk_live_secret", ("stock:read",), None, "")
    memo.put(asked, Decision(True, Reason.ALLOWED, "allowed"), memo.generation, None)
    now = time.time()
    assert memo.get(asked, now) is not None
    states.apply([Change(1, ChangeSubject.KEY, "key_9")], time.monotonic())
    assert memo.get(asked, now) is None  # remembered, but something changed since: a miss
    assert (memo.lookups.hits, memo.lookups.misses) == (1, 1)


class Gate:
    """A stand-in hasher whose verifications wait until the gate opens."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.entered = threading.Event()

    def verify(self, _encoded: str | None, _secret: str) -> bool:
        self.entered.set()
        return self.open.wait(10)


def test_the_argon2_pool_reports_its_use_and_its_refusals() -> None:
    gate = Gate()
    pool = BoundedHasher(gate, threads=1, queue=0)  # type: ignore[arg-type]
    assert (pool.in_use, pool.threads, pool.capacity, pool.refused) == (0, 1, 1, 0)
    running = threading.Thread(target=pool.verify, args=(None, "first"))
    running.start()
    assert gate.entered.wait(10)
    assert pool.in_use == 1
    with pytest.raises(IdentityError) as refused:
        pool.verify(None, "second")
    assert refused.value.reason is Reason.RATE_LIMITED
    assert pool.refused == 1
    gate.open.set()
    running.join(10)
    assert (pool.in_use, pool.refused) == (0, 1)
    pool.shutdown()


class Busy:
    """A hasher that spends ``cpu`` seconds of its thread's CPU, then ``idle`` seconds asleep."""

    def __init__(self, cpu: float, idle: float) -> None:
        self.cpu, self.idle = cpu, idle

    def verify(self, _encoded: str | None, _secret: str) -> bool:
        until = time.thread_time() + self.cpu
        while time.thread_time() < until:
            pass
        time.sleep(self.idle)
        return True


def test_the_argon2_pool_counts_its_work_and_the_cpu_it_took_not_the_time_it_waited() -> None:
    pool = BoundedHasher(Busy(cpu=0.1, idle=0.3), threads=1, queue=1)  # type: ignore[arg-type]
    assert (pool.done, pool.cpu_seconds) == (0, 0.0)
    assert pool.verify(None, "a") and pool.verify(None, "b")
    assert pool.done == 2
    assert 0.2 <= pool.cpu_seconds < 0.5  # 0.6 s asleep are not counted
    pool.shutdown()


def snapshot(calls: int, seconds: float, hits: int, cursor: int) -> WorkerSnapshot:
    buckets = [0] * (len(LATENCY_BOUNDS) + 1)
    buckets[0], buckets[-1] = calls - 1, 1
    return WorkerSnapshot(
        rpcs=RpcTotals({(CHECK, "OK"): calls}, {CHECK: buckets}, {CHECK: seconds}),
        lookups={"allows": (hits, 1)},
        argon2_in_use=0,
        argon2_threads=1,
        argon2_capacity=17,
        argon2_refused=2,
        argon2_done=3,
        argon2_cpu_seconds=1.25,
        changefeed_lag_seconds=0.1,
        changefeed_cursor=cursor,
    )


def scrape(reports: list[WorkerReport]) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """What a scrape shows: metric name -> labels -> value, parsed back from the text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(lambda: reports))
    shown: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            shown.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return shown


def test_counters_and_histograms_are_summed_over_workers_gauges_shown_per_live_worker() -> None:
    shown = scrape(
        [
            WorkerReport(0, snapshot(calls=3, seconds=0.5, hits=4, cursor=7), current=True),
            WorkerReport(1, snapshot(calls=5, seconds=1.5, hits=6, cursor=5), current=False),  # gone
        ]
    )
    assert shown["identity_rpcs_total"] == {(("code", "OK"), ("method", CHECK)): 8}
    buckets = shown["identity_rpc_duration_seconds_bucket"]
    assert buckets[(("le", str(LATENCY_BOUNDS[0])), ("method", CHECK))] == 6
    assert buckets[(("le", str(LATENCY_BOUNDS[-1])), ("method", CHECK))] == 6
    assert buckets[(("le", "+Inf"), ("method", CHECK))] == 8
    assert shown["identity_rpc_duration_seconds_count"] == {(("method", CHECK),): 8}
    assert shown["identity_rpc_duration_seconds_sum"] == {(("method", CHECK),): 2.0}
    assert shown["identity_cache_lookups_total"] == {
        (("cache", "allows"), ("result", "hit")): 10,
        (("cache", "allows"), ("result", "miss")): 2,
    }
    assert shown["identity_argon2_refusals_total"] == {(): 4}
    assert shown["identity_argon2_hashes_total"] == {(): 6}
    assert shown["identity_argon2_cpu_seconds_total"] == {(): 2.5}
    assert shown["identity_changefeed_cursor"] == {(("worker", "0"),): 7}  # the gone worker has no gauges
    assert shown["identity_argon2_capacity"] == {(("worker", "0"),): 17}
    assert shown["identity_workers_reporting"] == {(): 1}


class Worker:
    """A worker's side of the pipe: each snapshot shows how many were taken; a slow one answers late."""

    def __init__(self) -> None:
        self.taken = 0
        self.slow = False

    def snapshot(self) -> WorkerSnapshot:
        self.taken += 1
        if self.slow:
            time.sleep(1)
        return snapshot(calls=3, seconds=0.5, hits=4, cursor=self.taken)


def test_the_parent_gathers_every_worker_and_keeps_the_counters_of_one_gone_silent() -> None:
    context = multiprocessing.get_context("spawn")
    pipes = [context.Pipe() for _ in range(3)]
    prompt, late = Worker(), Worker()
    answer_scrapes(pipes[0][1], prompt.snapshot, lambda: None)
    answer_scrapes(pipes[1][1], late.snapshot, lambda: None)
    pipes[2][1].close()  # this worker has exited before the first scrape
    scrapes = WorkerScrapes([mine for mine, _ in pipes], timeout=0.3)

    def shown() -> list[tuple[int, int, bool]]:
        return [(r.worker, r.snapshot.changefeed_cursor, r.current) for r in scrapes.gather()]

    assert shown() == [(0, 1, True), (1, 1, True)]
    late.slow = True
    assert shown() == [(0, 2, True), (1, 1, False)]  # its last snapshot, kept for its counters
    late.slow = False
    time.sleep(1.2)  # the late answer arrives now, and must not pass for the next scrape's
    assert shown() == [(0, 3, True), (1, 3, True)]


def test_a_worker_hears_when_its_parent_is_gone() -> None:
    mine, theirs = multiprocessing.get_context("spawn").Pipe()
    gone = threading.Event()
    answer_scrapes(theirs, Worker().snapshot, gone.set)
    assert not gone.wait(0.2)
    mine.close()  # as when the parent exits, however it exits
    assert gone.wait(5)
