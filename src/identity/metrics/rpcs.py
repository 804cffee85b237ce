"""Counts and latencies of RPCs, recorded without a lock.

Each request thread keeps its own tallies, so recording a call costs a few dictionary updates:
no lock, no system call, and no update lost to a thread switch. A scrape sums the threads'
tallies. (prometheus_client's own metrics take a lock on every update, and in its
multiprocess mode one lock shared by the whole process plus a write to a mapped file: on a
warm Check that is measurable, and a lock held across a thread switch makes the others queue.)
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

from identity.metrics.perthread import PerThread

# Upper bounds in seconds: a warm Check takes tens of microseconds, a cold one an argon2id hash.
LATENCY_BOUNDS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass
class RpcTotals:
    """What RPCs did, per method: calls by status code, and a latency histogram."""

    calls: dict[tuple[str, str], int] = field(default_factory=dict)  # (method, code) -> calls
    # method -> calls per latency bucket: one per bound, the last for slower than every bound
    buckets: dict[str, list[int]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # method -> time spent in all its calls

    def add(self, other: RpcTotals) -> None:
        """Add ``other``'s counts to these."""
        for key, calls in other.calls.items():
            self.calls[key] = self.calls.get(key, 0) + calls
        for method, buckets in other.buckets.items():
            mine = self.buckets.get(method)
            self.buckets[method] = (
                list(buckets) if mine is None else [a + b for a, b in zip(mine, buckets, strict=True)]
            )
        for method, seconds in other.seconds.items():
            self.seconds[method] = self.seconds.get(method, 0.0) + seconds


class RpcTally:
    """Per-thread counts of calls by method and code, and latencies by method."""

    def __init__(self) -> None:
        """Count nothing yet; latencies go into buckets by :data:`LATENCY_BOUNDS`."""
        self._threads = PerThread(RpcTotals)

    def record(self, method: str, code: str, seconds: float) -> None:
        """Count one call of ``method`` that ended with status ``code`` after ``seconds``."""
        mine = self._threads.mine()
        calls = mine.calls
        key = (method, code)
        calls[key] = calls.get(key, 0) + 1
        buckets = mine.buckets.get(method)
        if buckets is None:
            buckets = mine.buckets[method] = [0] * (len(LATENCY_BOUNDS) + 1)
        buckets[bisect_left(LATENCY_BOUNDS, seconds)] += 1
        mine.seconds[method] = mine.seconds.get(method, 0.0) + seconds

    def totals(self) -> RpcTotals:
        """The sum over every thread so far."""
        summed = RpcTotals()
        for totals in self._threads.every():
            # Each copy is made by C code that no thread switch interrupts, so none is torn
            # mid-update (the three may differ by a call that ends meanwhile).
            summed.add(
                RpcTotals(
                    dict(totals.calls),
                    {method: list(b) for method, b in list(totals.buckets.items())},
                    dict(totals.seconds),
                )
            )
        return summed
