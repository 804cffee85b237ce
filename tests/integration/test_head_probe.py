"""The change log's head read on a connection of its own (identity.store.head), on both databases:
it sees every commit, holds no transaction open, fails UNAVAILABLE and comes back; and a feed poll
that finds nothing new sends nothing through the engine."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import create_engine, event, text

from identity.app.bootstrap import bootstrap
from identity.cache.states import KeyStateCache
from identity.changefeed import ChangeFeed
from identity.crypto.hashing import SecretHasher
from identity.domain.errors import IdentityError, Reason
from identity.store.database import Database
from identity.store.notifications import Sleeper
from identity.store.repository import Repository
from tests.integration.test_change_feed import change_organization, new_organization


def logged_head(db: Database) -> int:
    with db.read() as session:
        return Repository(session).head_cursor()


def test_the_head_is_zero_on_an_empty_log_and_follows_every_commit(db: Database) -> None:
    assert db.change_log_head() == 0
    other = Database(db.engine.url.render_as_string(hide_password=False))
    try:
        org = new_organization(other)
        for _ in range(3):
            # Written through another handle: the probe's connection holds no old snapshot.
            head = change_organization(other, org)
            assert db.change_log_head() == head == logged_head(db)
    finally:
        other.dispose()


def test_the_probe_holds_no_transaction_open(db: Database, database_url: str) -> None:
    if db.is_sqlite:
        # SQLite: a read left open would pin its snapshot; the test above would then see an old head.
        pytest.skip("PostgreSQL reports its sessions' transaction state; SQLite is covered above")
    db.change_log_head()
    admin = create_engine(database_url)
    try:
        with admin.connect() as connection:
            states = connection.execute(
                text(
                    "SELECT state FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).scalars()
            assert set(states) == {"idle"}  # the probe's connection among them, none "idle in transaction"
    finally:
        admin.dispose()


def test_a_lost_connection_fails_unavailable_once_then_the_next_read_reconnects(
    db: Database, database_url: str
) -> None:
    if db.is_sqlite:
        pytest.skip("a SQLite connection is a file handle; nothing outside the process can end it")
    before = db.change_log_head()
    admin = create_engine(database_url)
    try:
        with admin.connect() as connection:
            connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
    finally:
        admin.dispose()
    with pytest.raises(IdentityError) as failed:
        db.change_log_head()
    assert failed.value.reason is Reason.UNAVAILABLE
    assert db.change_log_head() == before


def test_a_poll_that_finds_nothing_new_sends_nothing_through_the_engine(
    db: Database, hasher: SecretHasher
) -> None:
    bootstrap(db, hasher)
    sent: list[str] = []

    def record(_connection: object, _cursor: object, statement: str, *_rest: object) -> None:
        sent.append(statement)

    feed = ChangeFeed(db, KeyStateCache(max_entries=10), Sleeper(), poll_seconds=0.01)
    feed.start()
    try:
        event.listen(db.engine, "before_cursor_execute", record)
        time.sleep(0.3)  # about 30 polls
        assert feed.lag_seconds < 0.1, "every poll reached the end of the log"
        assert sent == []
        head = change_organization(db, new_organization(db))
        assert feed.cursor == head  # news: read, and applied before the write returned
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
        feed.stop()
