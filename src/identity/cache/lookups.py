"""Hits and misses of a cache, for its hit ratio."""

from __future__ import annotations


class Lookups:
    """Counts of lookups that found what they sought, and of those that did not.

    The owning cache counts under the lock it already holds for the lookup, so the counts are
    exact and cost no lock of their own.
    """

    __slots__ = ("hits", "misses")

    def __init__(self) -> None:
        """Start at zero."""
        self.hits = 0
        self.misses = 0

    def count(self, hit: bool) -> None:
        """Count one lookup."""
        if hit:
            self.hits += 1
        else:
            self.misses += 1
