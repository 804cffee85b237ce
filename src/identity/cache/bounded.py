"""A bounded least-recently-used map whose entries may carry a deadline.

Not thread-safe on its own: each owner guards it with the lock that also guards the owner's
other state, so one acquisition covers a whole lookup. The one exception, for the lookup a warm
Check makes on every call, is :meth:`BoundedCache.get_beside_writers`.
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
        self._entries: OrderedDict[K, V] = OrderedDict()
        # Kept apart, for the entries that have one: most entries of most caches have none.
        self._deadlines: dict[K, float] = {}

    def __len__(self) -> int:
        """How many entries are held (expired ones included until they are next looked at)."""
        return len(self._entries)

    def get(self, key: K) -> V | None:
        """The live value of ``key``, or None; a hit counts as a use."""
        value = self._entries.get(key)
        if value is None:
            return None
        deadline = self._deadlines.get(key)
        if deadline is not None and deadline <= time.monotonic():
            self.pop(key)
            return None
        self._entries.move_to_end(key)
        return value

    def get_beside_writers(self, key: K) -> V | None:
        """What :meth:`get` returns for a key put without a deadline, safe without the owner's lock.

        Each of its two steps is one call into the ordered dictionary's C code, which keeps the
        map whole whatever other threads do between them; a key that another thread evicts
        between the two steps is still returned, and not moved.
        """
        value = self._entries.get(key)
        if value is not None:
            try:  # noqa: SIM105 - contextlib.suppress would cost a with-statement on every hit
                self._entries.move_to_end(key)
            except KeyError:
                pass
        return value

    def put(self, key: K, value: V, deadline: float | None = None) -> None:
        """Hold ``value`` until evicted or, when given, until ``deadline`` (a ``time.monotonic()`` value)."""
        if self.max_entries <= 0:
            return
        self._entries[key] = value
        self._entries.move_to_end(key)
        if deadline is None:
            self._deadlines.pop(key, None)
        else:
            self._deadlines[key] = deadline
        while len(self._entries) > self.max_entries:
            oldest, _ = self._entries.popitem(last=False)
            self._deadlines.pop(oldest, None)

    def pop(self, key: K) -> None:
        """Forget ``key`` if held."""
        self._entries.pop(key, None)
        self._deadlines.pop(key, None)

    def clear(self) -> None:
        """Forget everything."""
        self._entries.clear()
        self._deadlines.clear()
