"""Remembered allows: a warm Check asked again is answered without being judged again.

An allow is a pure function of the credential's live state, the request and the clock. It is
kept only while the key-state cache is fresh and has applied no change since the allow was
judged (its generation is unchanged), and only until the credential's own time runs out
(expiry, the end of a rotation's grace). Denials are never kept: each one is audited.
Credentials are known here only by fingerprint.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from datetime import datetime

from identity.cache.bounded import BoundedCache
from identity.cache.lookups import Lookups
from identity.cache.states import KeyStateCache
from identity.domain.decisions import Decision

MAX_ENTRIES = 10_000


class AllowMemo:
    """The most recently used allows, each under the key-state generation it was judged at."""

    def __init__(
        self, states: KeyStateCache, fingerprint: Callable[[str], bytes], max_entries: int = MAX_ENTRIES
    ) -> None:
        """Trust entries while ``states`` has not moved; know credentials by ``fingerprint``."""
        self._states = states
        self._fingerprint = fingerprint
        self._lock = threading.Lock()
        self._entries: BoundedCache[Hashable, tuple[Decision, int, float | None]] = BoundedCache(max_entries)
        self.lookups = Lookups()  # a hit is a Check answered from a remembered allow

    def key(self, credential: str, *request: Hashable) -> Hashable:
        """The memo key of a credential asked ``request`` (permissions, resource, client address)."""
        return (self._fingerprint(credential), *request)

    @property
    def generation(self) -> int:
        """Take this before judging a decision that may be remembered."""
        return self._states.generation

    def get(self, key: Hashable, now: datetime) -> Decision | None:
        """The allow remembered under ``key`` if it still holds at ``now``."""
        with self._lock:
            entry = self._entries.get(key)
            decision = None if entry is None else self._holding(*entry, now)
            self.lookups.count(decision is not None)
        return decision

    def _holding(
        self, decision: Decision, generation: int, until: float | None, now: datetime
    ) -> Decision | None:
        if generation != self._states.generation or not self._states.fresh():
            return None
        if until is not None and now.timestamp() >= until:
            return None
        return decision

    def put(self, key: Hashable, decision: Decision, generation: int, until: datetime | None) -> None:
        """Remember an allow judged at ``generation`` that holds by itself until ``until``."""
        with self._lock:
            self._entries.put(key, (decision, generation, until.timestamp() if until else None))
