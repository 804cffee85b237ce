"""A bounded least-recently-used map whose entries may carry a deadline.

Not thread-safe on its own: each owner guards it with the lock that also guards the owner's
other state, so one acquisition covers a whole lookup.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class BoundedCache(Generic[K, V]):
    """At most ``max_entries`` entries; the least recently used goes first when full."""

    def __init__(self, max_entries: int) -> None:
        """Hold up to ``max_entries`` entries (0 disables the cache: nothing is kept)."""
        self.max_entries = max_entries
        self._entries: OrderedDict[K, tuple[V, float | None]] = OrderedDict()

    def __len__(self) -> int:
        """How many entries are held (expired ones included until they are next looked at)."""
        return len(self._entries)

    def get(self, key: K) -> V | None:
        """The live value of ``key``, or None; a hit counts as a use."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        value, deadline = entry
        if deadline is not None and deadline <= time.monotonic():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    def put(self, key: K, value: V, deadline: float | None = None) -> None:
        """Hold ``value`` until evicted or, when given, until ``deadline`` (a ``time.monotonic()`` value)."""
        if self.max_entries <= 0:
            return
        self._entries[key] = (value, deadline)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def pop(self, key: K) -> None:
        """Forget ``key`` if held."""
        self._entries.pop(key, None)

    def clear(self) -> None:
        """Forget everything."""
        self._entries.clear()
