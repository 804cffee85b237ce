"""Remembered allows: a warm Check asked again is answered without being judged again.

An allow is a pure function of the credential's live state, the request and the clock. It is
kept only while the key-state cache is fresh and has applied no change since the allow was
judged (its generation is unchanged), and only until the credential's own time runs out
(expiry, the end of a rotation's grace). Denials are never kept: each one is audited.
Credentials are known here only by fingerprint. The decision engine keeps its allows here, and
the Check door keeps the encoded answers built from them, under the same bounds
(see ``identity.services.answers``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Generic, NamedTuple, TypeVar

from identity.cache.bounded import BoundedCache
from identity.cache.lookups import Lookups
from identity.cache.states import KeyStateCache

MAX_ENTRIES = 10_000
V = TypeVar("V")


class Held(NamedTuple, Generic[V]):
    """A remembered allow (or what was built from one), with what bounds it."""

    value: V
    generation: int  # of the key-state cache when the allow was judged
    until: float | None  # POSIX time when the credential's own time runs out, if it does


class AllowMemo(Generic[V]):
    """The most recently used allows, each under the key-state generation it was judged at."""

    def __init__(
        self,
        states: KeyStateCache,
        fingerprint: Callable[[str | bytes], bytes],
        max_entries: int = MAX_ENTRIES,
    ) -> None:
        """Trust entries while ``states`` has not moved; know credentials by ``fingerprint``."""
        self._states = states
        self._fingerprint = fingerprint
        self._lock = threading.Lock()
        self._entries: BoundedCache[Hashable, Held[V]] = BoundedCache(max_entries)
        self.lookups = Lookups()

    def key(self, credential: str | bytes, *request: Hashable) -> Hashable:
        """The memo key of a credential (or bytes holding one) asked ``request``."""
        return (self._fingerprint(credential), *request)

    @property
    def generation(self) -> int:
        """Take this before judging a decision that may be remembered."""
        return self._states.generation

    def get(self, key: Hashable, now: float) -> V | None:
        """What is remembered under ``key`` if its allow still holds at ``now`` (POSIX time); counted as a lookup."""
        entry = self.held(key, now)
        self.lookups.count(entry is not None)
        return None if entry is None else entry.value

    def held(self, key: Hashable, now: float) -> Held[V] | None:
        """The entry under ``key`` if its allow still holds at ``now`` (POSIX time), not counted."""
        entry = self._entries.get_beside_writers(key)  # no lock: a warm Check asks on every call
        if entry is None or not self._states.unchanged_since(entry.generation):
            return None
        return entry if entry.until is None or now < entry.until else None

    def put(self, key: Hashable, value: V, generation: int, until: float | None) -> None:
        """Remember ``value`` for an allow judged at ``generation`` that holds by itself until ``until``."""
        with self._lock:
            self._entries.put(key, Held(value, generation, until))
