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


class PerThread(Generic[T]):
    """One tally per thread, made by ``make`` on the thread's first use."""

    __slots__ = ("_joining", "_local", "_make", "_tallies")

    def __init__(self, make: Callable[[], T]) -> None:
        """Make each thread's tally with ``make``."""
        self._make = make
        self._local = threading.local()
        self._tallies: list[T] = []
        self._joining = threading.Lock()  # taken once per thread, on its first use

    def mine(self) -> T:
        """The calling thread's tally: only that thread writes it."""
        try:
            tally: T = self._local.tally
        except AttributeError:
            tally = self._local.tally = self._make()
            with self._joining:
                self._tallies.append(tally)
        return tally

    def every(self) -> list[T]:
        """Every thread's tally so far (a thread that ended keeps its counts)."""
        with self._joining:
            return list(self._tallies)
