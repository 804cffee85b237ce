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
_FIRST_BUCKET = 2  # a tally row holds calls, seconds, then the calls in each bucket


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
        # Each thread's rows: (method, code) -> [calls, seconds, calls in each latency bucket...].
        # A call touches one row, found by one lookup: a warm Check is counted on every call.
        self._threads: PerThread[dict[tuple[str, str], list[float]]] = PerThread(dict)

    def record(self, method: str, code: str, seconds: float) -> None:
        """Count one call of ``method`` that ended with status ``code`` after ``seconds``."""
        rows = self._threads.mine()
        row = rows.get((method, code))
        if row is None:
            row = rows[(method, code)] = [0] * (_FIRST_BUCKET + len(LATENCY_BOUNDS) + 1)
        row[0] += 1
        row[1] += seconds
        row[_FIRST_BUCKET + bisect_left(LATENCY_BOUNDS, seconds)] += 1

    def totals(self) -> RpcTotals:
        """The sum over every thread so far."""
        summed = RpcTotals()
        for rows in self._threads.every():
            # Each row is copied by C code that no thread switch interrupts, so none is torn
            # mid-update (rows may differ by a call that ends meanwhile).
            for (method, code), row in [(key, list(row)) for key, row in list(rows.items())]:
                buckets = [int(calls) for calls in row[_FIRST_BUCKET:]]
                summed.add(RpcTotals({(method, code): int(row[0])}, {method: buckets}, {method: row[1]}))
        return summed
