"""Hits and misses of a cache, for its hit ratio."""

from __future__ import annotations

import threading

from identity.blocking import after_try


class Lookups:
    """Counts of lookups that found what they sought, and of those that did not.

    A lookup made by a call tried on the event loop counts once that try ended: a try that
    would have waited runs again on a request thread, and only that run's lookups count.
    """

    __slots__ = ("_lock", "hits", "misses")

    def __init__(self) -> None:
        """Start at zero."""
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def count(self, hit: bool) -> None:
        """Count one lookup."""
        after_try(self._add, hit)

    def _add(self, hit: bool) -> None:
        with self._lock:
            if hit:
                self.hits += 1
            else:
                self.misses += 1
