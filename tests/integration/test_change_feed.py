"""The change feed: another replica's change reaches a follower by polling alone (both databases)
or, on PostgreSQL, at once by LISTEN/NOTIFY; and concurrent writers never make a follower skip one."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from identity.cache.states import FRESHNESS_SECONDS, KeyStateCache
from identity.changefeed import ChangeFeed
from identity.domain.model import Change, ChangeSubject, KeyPolicy, Organization, OrganizationState
from identity.ids import new_id
from identity.store.database import Database
from identity.store.lookups import changes_after
from identity.store.notifications import ChangeWaiter, Listener, Sleeper
from identity.store.repository import Repository


class RecordingCache(KeyStateCache):
    """A key-state cache that also remembers the cursor of every change applied to it."""

    def __init__(self) -> None:
        super().__init__(max_entries=100)
        self.cursors: list[int] = []

    def apply(self, changes: Sequence[Change], caught_up_at: float | None) -> None:
        self.cursors += [c.cursor for c in changes]
        super().apply(changes, caught_up_at)


def new_organization(db: Database) -> Organization:
    now = datetime.now(UTC)
    org = Organization(new_id("org"), "Fed", OrganizationState.ACTIVE, KeyPolicy(), now, now)
    with db.write() as session:
        Repository(session).add_organization(org)
    return org


def change_organization(db: Database, org: Organization) -> int:
    """Change an organization as the use case does (the row and its log entry); the log's head after."""
    now = datetime.now(UTC)
    with db.write() as session:
        repo = Repository(session)
        repo.save_organization(replace(org, update_time=now))
        repo.add_dependency_change(ChangeSubject.ORGANIZATION, org.id, org.id, now)
    with db.read() as session:
        return Repository(session).head_cursor()


@pytest.fixture
def other_replica(db: Database) -> Iterator[Database]:
    """A second handle on the test database: another replica, as far as the follower can tell."""
    other = Database(db.engine.url.render_as_string(hide_password=False))
    yield other
    other.dispose()


@contextmanager
def following(
    db: Database, waiter: ChangeWaiter, poll_seconds: float
) -> Iterator[tuple[ChangeFeed, RecordingCache]]:
    cache = RecordingCache()
    feed = ChangeFeed(db, cache, waiter, poll_seconds)
    feed.start()
    try:
        yield feed, cache
    finally:
        feed.stop()


def seconds_until_applied(feed: ChangeFeed, cursor: int, timeout: float) -> float:
    started = time.monotonic()
    while feed.cursor < cursor:
        elapsed = time.monotonic() - started
        assert elapsed < timeout, f"change {cursor} not applied after {elapsed:.2f} s (at {feed.cursor})"
        time.sleep(0.002)
    return time.monotonic() - started


def test_polling_alone_follows_another_replica_within_the_bound(
    db: Database, other_replica: Database
) -> None:
    org = new_organization(other_replica)
    with following(db, Sleeper(), poll_seconds=0.2) as (feed, _):
        for _ in range(5):
            head = change_organization(other_replica, org)
            assert seconds_until_applied(feed, head, FRESHNESS_SECONDS) < FRESHNESS_SECONDS


def test_listen_notify_wakes_the_follower_at_once(db: Database, other_replica: Database) -> None:
    if db.engine.dialect.name != "postgresql":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's; SQLite followers poll (tested above)")
    org = new_organization(other_replica)
    # Polling every 30 s: only a notification can bring the change within a second.
    with following(db, Listener(db.engine.url), poll_seconds=30) as (feed, _):
        time.sleep(0.5)  # the first wait opens the listening connection
        waits = []
        for _ in range(5):
            head = change_organization(other_replica, org)
            waits.append(seconds_until_applied(feed, head, 5))
    assert max(waits) < 0.5, waits


def test_concurrent_writers_never_make_a_follower_skip_a_change(
    db: Database, other_replica: Database
) -> None:
    orgs = [new_organization(other_replica) for _ in range(4)]
    with db.read() as session:
        start = Repository(session).head_cursor()
    with following(db, Sleeper(), poll_seconds=0.001) as (feed, cache):

        def write_many(org: Organization) -> None:
            for _ in range(25):
                change_organization(other_replica, org)

        writers = [threading.Thread(target=write_many, args=(org,)) for org in orgs]
        for thread in writers:
            thread.start()
        for thread in writers:
            thread.join()
        with db.read_once() as connection:
            logged = [c.cursor for c in changes_after(connection, start, 1000)]
        seconds_until_applied(feed, logged[-1], 5)
        applied = cache.cursors
    assert len(logged) == 100
    # Every change applied exactly once, in order: none skipped while others committed around it.
    assert applied == logged
