"""Reads through the key-state cache: a read the stale cache sent to the database, racing a
catch-up that renews the cache, never leaves the cache answering what that read contradicted
(both databases)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import pytest

from identity.app.bootstrap import SYSTEM, bootstrap
from identity.app.keys import Keys
from identity.cache.states import KeyStateCache, LiveKey
from identity.credentials import CredentialStore
from identity.crypto.apikeys import parse as parse_key
from identity.crypto.hashing import SecretHasher
from identity.store.database import Database
from identity.store.lookups import changes_after
from identity.store.tokens import TokenRepository

T = TypeVar("T")


class CaughtUpAfterAMiss(KeyStateCache):
    """A stale cache whose change feed, with a read begun before the change, ends just after a lookup misses."""

    def __init__(self) -> None:
        super().__init__(max_entries=10, freshness_seconds=0.05)
        self.catch_up_began: float | None = None

    def get(self, key_id: str, principal_id: str = "") -> LiveKey | None:
        return self._then_catch_up(super().get(key_id, principal_id))

    def token_revoked(self, jti: str) -> bool | None:
        return self._then_catch_up(super().token_revoked(jti))

    def _then_catch_up(self, answer: T | None) -> T | None:
        if answer is None and self.catch_up_began is not None:
            self.apply([], self.catch_up_began)
            self.catch_up_began = None
        return answer


def revoke_key(db: Database, hasher: SecretHasher, key_id: str) -> Callable[[CredentialStore], object]:
    Keys(db, hasher).revoke(SYSTEM, key_id, "leaked")
    return lambda store: store.live_key(key_id)


def revoke_token(db: Database, _hasher: SecretHasher, key_id: str) -> Callable[[CredentialStore], object]:
    now = datetime.now(UTC)
    with db.write() as session:
        TokenRepository(session).revoke_token("tok_leaked", "org_any", now + timedelta(minutes=5), now)
    return lambda store: store.token_revoked("tok_leaked")


@pytest.mark.parametrize("change", [revoke_key, revoke_token])
def test_a_catch_up_that_renews_the_cache_between_its_miss_and_the_read_is_undone(
    db: Database, hasher: SecretHasher, change: Callable[..., Callable[[CredentialStore], object]]
) -> None:
    """The replica tests' deny-then-allow: the lookup finds the cache stale; a catch-up begun before
    the change ends and makes it fresh; only then the read starts, and sees the change. Fresh, the
    cache (and every allow remembered under it) would go on saying what the read just denied."""
    issued = bootstrap(db, hasher)
    cache = CaughtUpAfterAMiss()
    store = CredentialStore(db, cache)
    cache.apply([], time.monotonic())
    assert store.live_key(issued.key.id) is not None  # filled, and fresh
    time.sleep(0.06)  # the change feed falls behind
    cache.catch_up_began = time.monotonic()  # a catch-up begins, before the change commits
    read = change(db, hasher, issued.key.id)
    read(store)  # misses, the catch-up ends, then the read sees the change
    assert not cache.fresh()
    cache.apply([], time.monotonic())  # another catch-up short of the change
    assert not cache.fresh()
    with db.read_once() as connection:
        changes = changes_after(connection, 0, 100)
    cache.apply(changes, time.monotonic())  # one that read the change
    assert cache.fresh()


def test_two_reads_by_lookup_handle_that_straddle_a_deletion_leave_no_allow(
    db: Database, hasher: SecretHasher
) -> None:
    """An API key not verified before is read by its lookup handle. One read found the key (and
    its caller was allowed); the key was deleted; another read, before the change feed applied
    the deletion, found nothing. The cache must not go on answering with the key the first read
    stored: the caller would be refused, then allowed again."""
    issued = bootstrap(db, hasher)
    lookup = parse_key(issued.api_key)
    assert lookup is not None
    cache = KeyStateCache(max_entries=10)
    store = CredentialStore(db, cache)
    cache.apply([], time.monotonic())
    assert store.by_lookup(lookup.lookup) is not None  # the earlier read, stored
    Keys(db, hasher).delete(SYSTEM, issued.key.id)  # committed; the change feed has not applied it
    assert store.by_lookup(lookup.lookup) is None  # the later read
    assert store.live_key(issued.key.id) is None  # what a call with the verified secret asks next
