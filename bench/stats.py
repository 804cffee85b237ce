"""Latency percentiles, one measured run, and the median of several runs."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Run:
    """One measured load run, or the median of several.

    ``rps`` counts completed calls per second (answered or refused alike); ``errors`` counts the
    completed calls that did not get the expected answer.
    """

    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    calls: int

    @property
    def ok(self) -> int:
        """Calls that got the expected answer."""
        return self.calls - self.errors


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of already sorted values (``fraction`` 0.5 is the median)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def summarize(latencies_s: Sequence[float], seconds: float, errors: int) -> Run:
    """A run from its per-call latencies (seconds), its length and how many calls failed."""
    ordered = sorted(latencies_s)
    return Run(
        rps=len(ordered) / seconds if seconds > 0 else 0.0,
        p50_ms=percentile(ordered, 0.50) * 1000,
        p99_ms=percentile(ordered, 0.99) * 1000,
        errors=errors,
        calls=len(ordered),
    )


def median_run(runs: Sequence[Run]) -> Run:
    """Each figure's median over ``runs`` (this machine is noisy); errors and calls are summed."""
    if not runs:
        raise ValueError("no runs to take the median of")
    return Run(
        rps=statistics.median(r.rps for r in runs),
        p50_ms=statistics.median(r.p50_ms for r in runs),
        p99_ms=statistics.median(r.p99_ms for r in runs),
        errors=sum(r.errors for r in runs),
        calls=sum(r.calls for r in runs),
    )
