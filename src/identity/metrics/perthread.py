"""Tallies kept per thread: counting takes no lock and loses no update, reading sums them all.

A shared counter guarded by a lock costs a warm call a lock round trip per count, and a lock
held across a thread switch makes the other threads queue behind it; an unguarded ``+= 1``
shared by threads loses counts. Each thread here gets its own tally on its first count and is
the only one to write it; a reader sees every thread's (the values C code copies are never torn
mid-update).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class _Local(threading.local, Generic[T]):
    # threading.local runs __init__ again, with these same arguments, in each thread on its
    # first use: so the thread's tally is made there, and reading it later is one lookup.
    def __init__(self, make: Callable[[], T], tallies: list[T], joining: threading.Lock) -> None:
        self.tally = make()
        with joining:
            tallies.append(self.tally)


class PerThread(Generic[T]):
    """One tally per thread, made by ``make`` on the thread's first use."""

    __slots__ = ("_joining", "_local", "_tallies")

    def __init__(self, make: Callable[[], T]) -> None:
        """Make each thread's tally with ``make``."""
        self._tallies: list[T] = []
        self._joining = threading.Lock()  # taken once per thread, on its first use
        self._local = _Local(make, self._tallies, self._joining)

    def mine(self) -> T:
        """The calling thread's tally: only that thread writes it."""
        return self._local.tally

    def every(self) -> list[T]:
        """Every thread's tally so far (a thread that ended keeps its counts)."""
        with self._joining:
            return list(self._tallies)
