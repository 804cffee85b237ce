"""Follows the key change log so that every replica honours every change within a bound.

One thread per process polls the log every ``POLL_SECONDS`` (woken early by PostgreSQL
LISTEN/NOTIFY where available) and applies what it reads to the key-state cache; a write made
by this process catches up at once, before its RPC answers. The same progress wakes
``WatchKeyEvents`` streams. The cache answers only while these catch-ups succeed (see
:mod:`identity.cache.states`): a failed one makes it stop at once, and without any it ages out
within a second, so a replica that loses the database fails closed.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime

from identity.cache.states import KeyStateCache
from identity.domain.errors import IdentityError
from identity.store.database import Database
from identity.store.lookups import changes_after
from identity.store.notifications import ChangeWaiter
from identity.store.repository import Repository
from identity.store.tokens import TokenRepository

log = logging.getLogger(__name__)

POLL_SECONDS = 0.2
BATCH = 500


class ChangeFeed:
    """Applies the change log to a :class:`KeyStateCache` and tells watchers when it moved."""

    def __init__(
        self, db: Database, cache: KeyStateCache, waiter: ChangeWaiter, poll_seconds: float = POLL_SECONDS
    ) -> None:
        """Follow ``db``'s change log into ``cache``, waiting on ``waiter`` between polls."""
        self._db = db
        self._cache = cache
        self._waiter = waiter
        self._poll_seconds = poll_seconds
        self._cursor: int | None = None
        self._catching_up = threading.Lock()
        self._moved = threading.Condition()
        self._stopping = threading.Event()
        self._failing = False
        self._caught_up_at = float("-inf")  # time.monotonic() of the last read that reached the log's end
        self._thread = threading.Thread(target=self._run, name="change-feed", daemon=True)
        db.after_change(self.catch_up)

    @property
    def cursor(self) -> int:
        """The newest change applied (0 before the first successful catch-up)."""
        return self._cursor or 0

    @property
    def lag_seconds(self) -> float:
        """Seconds since the last catch-up that reached the end of the log (infinite before one)."""
        return time.monotonic() - self._caught_up_at

    @property
    def stopped(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self._stopping.is_set()

    def start(self) -> None:
        """Catch up once, then keep following in the background."""
        self.catch_up()
        self._thread.start()

    def stop(self) -> None:
        """Stop following and release every watcher; the thread ends after its current wait."""
        self._stopping.set()
        self._waiter.close()
        with self._moved:
            self._moved.notify_all()

    def catch_up(self) -> None:
        """Apply every change committed so far. Never raises: on failure the cache stops answering."""
        with self._catching_up:
            try:
                self._catch_up()
            except IdentityError:
                # Whatever the database is doing, a cache that cannot follow it must not answer.
                self._cache.distrust()
                if not self._failing:
                    log.warning("cannot read the change log: caches distrusted until it answers again")
                self._failing = True
                return
        if self._failing:
            log.warning("change log readable again")
            self._failing = False

    def wait_beyond(self, cursor: int, timeout: float) -> None:
        """Block until a change after ``cursor`` was applied, the feed stops, or ``timeout`` passes."""
        with self._moved:
            self._moved.wait_for(lambda: self.cursor > cursor or self._stopping.is_set(), timeout)

    def _catch_up(self) -> None:
        if self._cursor is None:
            self._start_following()
        while True:
            started = time.monotonic()
            # Asked first and cheaply, as nearly every poll finds nothing new (see identity.store.head).
            if self._db.change_log_head() <= self.cursor:
                changes = []
            else:
                with self._db.read_once() as connection:
                    changes = changes_after(connection, self.cursor, BATCH)
            caught_up = len(changes) < BATCH
            # Trust the cache as of this read only when it saw the end of the log.
            self._cache.apply(changes, started if caught_up else None)
            if changes:
                with self._moved:
                    self._cursor = changes[-1].cursor
                    self._moved.notify_all()
            if caught_up:
                self._caught_up_at = started
                return

    def _start_following(self) -> None:
        # The head first, then the revocations: one committed in between is read twice, never missed.
        started = time.monotonic()
        with self._db.read() as session:
            head = Repository(session).head_cursor()
            revoked = TokenRepository(session).revoked_tokens(datetime.now(UTC))
        self._cache.reset(revoked, started, head)
        self._cursor = head

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._waiter.wait(self._poll_seconds)
            if not self._stopping.is_set():
                self.catch_up()
