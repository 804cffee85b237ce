"""Hits and misses of a cache, for its hit ratio."""

from __future__ import annotations

from identity.blocking import after_try
from identity.metrics.perthread import PerThread


class Lookups:
    """Counts of lookups that found what they sought, and of those that did not.

    A lookup made by a call tried on the event loop counts once that try ended: a try that
    would have waited runs again on a request thread, and only that run's lookups count.
    Counted per thread, without a lock: a warm Check counts one lookup or more.
    """

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        """Start at zero."""
        self._counts: PerThread[list[int]] = PerThread(lambda: [0, 0])  # [misses, hits]

    @property
    def hits(self) -> int:
        """Lookups that found what they sought."""
        return sum(counts[1] for counts in self._counts.every())

    @property
    def misses(self) -> int:
        """Lookups that did not."""
        return sum(counts[0] for counts in self._counts.every())

    def count(self, hit: bool) -> None:
        """Count one lookup."""
        after_try(self._add, hit)

    def _add(self, hit: bool) -> None:
        self._counts.mine()[hit] += 1
