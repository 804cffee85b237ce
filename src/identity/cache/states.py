"""The key-state cache: keys, organizations and principals as the database last said.

Kept true by the change log (see :mod:`identity.changefeed`): every applied change drops what
it touched, and the cache answers only while the feed is fresh, i.e. it caught up with the log
less than ``FRESHNESS_SECONDS`` ago. So a revocation on any replica is honoured here within
that bound, and a replica cut off from the database stops trusting its cache instead of
serving stale allows.

A fill races invalidations: a request may read a key just before a revocation commits and
store it just after the revocation was applied. Every fill therefore carries the cache's
*generation* from before its database read; any invalidation bumps the generation, and a fill
whose generation is no longer current is dropped instead of stored. Two fills at one generation
that disagree (or a fill and a read that found the key deleted, by id or by lookup handle)
straddled a change not yet applied; both are dropped and the generation bumped.

A read that a stale cache sent to the database races catch-ups: it may see a change (say a
revocation, and answer no) that the catch-up under way began too early to include. Made fresh
by that catch-up, the cache, and every allow remembered under it, would answer yes again. So
such a read reports the change log's head as it left it, and the cache is trusted again only
once it has applied the log up to there.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from identity.cache.bounded import BoundedCache
from identity.cache.lookups import Lookups
from identity.domain.model import Change, ChangeSubject, Key, Organization, Principal

# The invalidation bound: how long after its last catch-up with the change log the cache is trusted.
FRESHNESS_SECONDS = 1.0
# What reads at one generation found, kept to tell straddling reads apart; past this many notes the
# generation is bumped, which forgets them (and costs one more read of each key in use).
MAX_NOTES = 10_000


@dataclass(frozen=True, slots=True)
class LiveKey:
    """A key as it stands, its current secret version, and what its use depends on."""

    key: Key
    secret_version: int
    organization: Organization
    principal: Principal


class KeyStateCache:
    """Bounded maps of keys (with secret version), organizations and principals, plus revoked tokens."""

    def __init__(self, max_entries: int, freshness_seconds: float = FRESHNESS_SECONDS) -> None:
        """Hold up to ``max_entries`` of each kind; trust them ``freshness_seconds`` past a catch-up."""
        self._lock = threading.Lock()
        self._freshness = freshness_seconds
        self._fresh_until = float("-inf")
        self._renewed_at = float("-inf")  # when a catch-up last made the stale cache fresh again
        self._cursor = 0  # the newest change applied
        self._trusted_from = 0  # the cursor a catch-up must reach to make the cache fresh again
        self._generation = 0
        # Notes of reads at this generation: keys and lookup handles found to have no key, and
        # the key each lookup handle found.
        self._absent: set[str] = set()
        self._absent_lookups: set[str] = set()
        self._looked_up: dict[str, str] = {}
        self._keys: BoundedCache[str, tuple[Key, int]] = BoundedCache(max_entries)
        self._orgs: BoundedCache[str, Organization] = BoundedCache(max_entries)
        self._principals: BoundedCache[str, Principal] = BoundedCache(max_entries)
        self._revoked: dict[str, datetime] = {}
        self.lookups = Lookups()  # of keys, a lookup while the cache is not fresh being a miss

    @property
    def generation(self) -> int:
        """Take this before a database read whose result will be offered to :meth:`put`."""
        return self._generation

    def fresh(self) -> bool:
        """Whether the cache caught up with the change log recently enough to be trusted."""
        return time.monotonic() < self._fresh_until

    def unchanged_since(self, generation: int) -> bool:
        """Whether the cache is fresh and has applied no change since ``generation`` was taken."""
        return generation == self._generation and time.monotonic() < self._fresh_until

    def get(self, key_id: str, principal_id: str = "") -> LiveKey | None:
        """The cached state of a key with its organization and principal (the key's own by default).

        None when any part is missing or the cache is not fresh.
        """
        with self._lock:
            live = self._live(key_id, principal_id) if time.monotonic() < self._fresh_until else None
            self.lookups.count(live is not None)
        return live

    def _live(self, key_id: str, principal_id: str) -> LiveKey | None:
        held = self._keys.get(key_id)
        if held is None:
            return None
        key, version = held
        org = self._orgs.get(key.org_id)
        principal = self._principals.get(principal_id or key.principal_id)
        if org is None or principal is None:
            return None
        return LiveKey(key, version, org, principal)

    def read_may_be_ahead(self, began: float) -> bool:
        """Whether a database read from ``began`` (``time.monotonic()``) until now may be ahead of the cache.

        It may have seen changes the cache will answer without when the cache was not fresh all along.

        ``began`` is taken before the cache lookup that sent the call to the database: a catch-up
        may make the cache fresh between that miss and the read. A read while the cache stayed
        fresh may see newer changes too, but the allows remembered then already answer within
        the bound; only a stale cache must not come back to life behind such a read.
        """
        return time.monotonic() >= self._fresh_until or self._renewed_at >= began

    def note_read_ahead(self, head: int) -> None:
        """Note a read for which :meth:`read_may_be_ahead` held, and the change log's ``head`` read after it.

        Until the cache applied the log up to ``head``, it does not answer.
        """
        with self._lock:
            if head > self._cursor:
                self._fresh_until = float("-inf")
                self._trusted_from = max(self._trusted_from, head)

    def put(self, generation: int, live: LiveKey, lookup: str = "") -> None:
        """Store what a database read found, unless an invalidation happened since ``generation``.

        ``lookup``: the handle the read looked the key up by, if it did.

        Two reads at one generation may straddle a change the feed has not applied yet: one
        found the key (or its organization or principal) as it was, and an allow judged from it
        is remembered; the other found it changed, and refused. The cache cannot tell which read
        is the newer, so when they disagree it keeps neither, and bumps the generation so that
        nothing judged at this one answers again: the next call reads the database afresh.
        """
        with self._lock:
            if generation != self._generation:
                return
            key = self._keys.get(live.key.id)
            org = self._orgs.get(live.organization.id)
            principal = self._principals.get(live.principal.id)
            if (
                live.key.id in self._absent
                or lookup in self._absent_lookups
                or (key is not None and not _same_key(key, live))
                or (org is not None and org != live.organization)
                or (principal is not None and principal != live.principal)
            ):
                self._next_generation()
                self._keys.pop(live.key.id)
                self._orgs.pop(live.organization.id)
                self._principals.pop(live.principal.id)
                return
            self._keys.put(live.key.id, (live.key, live.secret_version))
            self._orgs.put(live.organization.id, live.organization)
            self._principals.put(live.principal.id, live.principal)
            if lookup:
                self._looked_up[lookup] = live.key.id
                self._bump_if_notes_full()

    def put_absent(self, generation: int, key_id: str = "", lookup: str = "") -> None:
        """Note that a database read found no key ``key_id`` (or none under the handle ``lookup``).

        Nothing is noted when an invalidation happened since ``generation``. Another read at the
        same generation may have found the key before its deletion: whichever comes second, fill
        or this, forgets the key and bumps the generation, as :meth:`put` does when two fills
        disagree.
        """
        with self._lock:
            if generation != self._generation:
                return
            if lookup:
                found = self._looked_up.get(lookup)
                if found is not None:
                    self._forget_key(found)
                    return
                self._absent_lookups.add(lookup)
            elif self._keys.get(key_id) is not None:
                self._forget_key(key_id)
                return
            else:
                self._absent.add(key_id)
            self._bump_if_notes_full()

    def token_revoked(self, jti: str) -> bool | None:
        """Whether the token was revoked; None when the cache is not fresh enough to say."""
        if not self.fresh():
            return None
        return jti in self._revoked

    def reset(self, revoked: Mapping[str, datetime], as_of: float, cursor: int) -> None:
        """Start over from the database's view at ``as_of``: nothing cached, these tokens revoked.

        ``cursor`` is the change log's head as of that view.
        """
        with self._lock:
            self._next_generation()
            for cache in (self._keys, self._orgs, self._principals):
                cache.clear()
            self._revoked = dict(revoked)
            self._cursor = cursor
            self._renew(as_of)

    def distrust(self) -> None:
        """Stop answering until the next successful catch-up (the change log could not be read)."""
        self._fresh_until = float("-inf")

    def apply(self, changes: Sequence[Change], caught_up_at: float | None) -> None:
        """Forget what ``changes`` touched; when ``caught_up_at`` is given, trust the cache from then.

        Not before the cache has applied the change log as far as a read ahead of it saw (see
        :meth:`note_read_ahead`).
        """
        with self._lock:
            if changes:
                self._next_generation()
            for change in changes:
                if change.subject is ChangeSubject.KEY:
                    self._keys.pop(change.subject_id)
                elif change.subject is ChangeSubject.ORGANIZATION:
                    self._orgs.pop(change.subject_id)
                elif change.subject is ChangeSubject.PRINCIPAL:
                    self._principals.pop(change.subject_id)
                elif change.expire_time is not None:
                    self._revoked[change.subject_id] = change.expire_time
            if changes:
                self._cursor = max(self._cursor, changes[-1].cursor)
                self._forget_expired_revocations()
            if caught_up_at is not None:
                self._renew(caught_up_at)

    def _forget_key(self, key_id: str) -> None:
        self._next_generation()
        self._keys.pop(key_id)

    def _bump_if_notes_full(self) -> None:
        if len(self._absent) + len(self._absent_lookups) + len(self._looked_up) >= MAX_NOTES:
            self._next_generation()

    def _next_generation(self) -> None:
        self._generation += 1
        self._absent.clear()
        self._absent_lookups.clear()
        self._looked_up.clear()

    def _renew(self, caught_up_at: float) -> None:
        if self._cursor < self._trusted_from:
            return
        now = time.monotonic()
        if now >= self._fresh_until:
            self._renewed_at = now
        self._fresh_until = caught_up_at + self._freshness

    def _forget_expired_revocations(self) -> None:
        now = datetime.now(UTC)
        for jti in [jti for jti, expires in self._revoked.items() if expires < now]:
            del self._revoked[jti]


def _same_key(held: tuple[Key, int], live: LiveKey) -> bool:
    # A key's use is recorded without a change: two reads of one key may differ in that alone.
    key, version = held
    return version == live.secret_version and replace(key, last_used_time=live.key.last_used_time) == live.key
