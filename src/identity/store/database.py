"""Engine set-up, the unit of work and migrations, for SQLite and PostgreSQL alike."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import resources
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session, sessionmaker

from identity.blocking import may_block
from identity.domain.errors import unavailable
from identity.store.head import HeadProbe

log = logging.getLogger(__name__)

# Set on a session that appended to the change log; its commit runs the after-change hooks.
_CHANGED = "identity_change_logged"
# How long a SQLite statement waits for a lock another connection holds before it fails (and
# the call with it, UNAVAILABLE). Writers queue for the one write lock: at 100 calls in flight on
# two workers of a busy machine some waited 5 to 7 s, so much less would refuse writes under
# load; 30 s (as before) made a lock held by another process hang each write for half a minute.
# SQLite's own wait for a locked-out read is about 10 s too.
SQLITE_BUSY_SECONDS = 10
# libpq settings that bound how long a call waits for a PostgreSQL host that has gone silent
# (powered off, or behind a firewall that drops packets), so it fails UNAVAILABLE in seconds
# instead of after the kernel's TCP timeouts of minutes. A setting in the URL's query wins.
POSTGRES_CONNECT_DEFAULTS = {
    "connect_timeout": 5,  # seconds to connect and authenticate
    "tcp_user_timeout": 5000,  # ms that sent data may stay unacknowledged
    "keepalives_idle": 10,  # seconds before an idle pooled connection is probed
    "keepalives_interval": 5,
    "keepalives_count": 3,
}
# Marks the engine of single-statement reads, which SQLite runs without a BEGIN.
_SINGLE_READ = "identity_single_read"


def note_change(session: Session) -> None:
    """Mark ``session`` as having appended to the change log (see :meth:`Database.after_change`)."""
    session.info[_CHANGED] = True


def make_engine(url: str) -> Engine:
    """Create an engine: SQLite in WAL mode with immediate write transactions, or PostgreSQL."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(
            parsed,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_SECONDS},
            pool_pre_ping=False,
        )
        _configure_sqlite(engine)
        return engine
    bounds = {name: value for name, value in POSTGRES_CONNECT_DEFAULTS.items() if name not in parsed.query}
    return create_engine(
        parsed, connect_args=bounds, pool_size=10, max_overflow=20, pool_timeout=10, pool_pre_ping=True
    )


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the driver so that BEGIN is ours to emit.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(connection: Connection) -> None:
        # Writers take the database lock at BEGIN, so check-then-insert (quotas) cannot race.
        options = connection.get_execution_options()
        if not options.get(_SINGLE_READ, False):
            connection.exec_driver_sql("BEGIN IMMEDIATE" if options.get("immediate", False) else "BEGIN")


def is_refusal(error: BaseException) -> bool:
    """Whether a write failed for what it wrote, not because the database is unavailable.

    A value or row the database will never take: retrying it cannot help.
    """
    return isinstance(error, IntegrityError) or isinstance(error.__cause__, DataError)


class Database:
    """The unit of work: ``read()`` and ``write()`` open a transaction that commits on success.

    Any database failure surfaces as an UNAVAILABLE :class:`IdentityError`, so callers fail
    closed; integrity errors pass through for callers that resolve races with constraints.
    """

    def __init__(self, url: str) -> None:
        """Connect lazily to ``url``."""
        self.engine = make_engine(url)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        self._readers = sessionmaker(self.engine, expire_on_commit=False)
        self._writers = sessionmaker(self.engine.execution_options(immediate=True), expire_on_commit=False)
        # A single statement reads one snapshot on its own, so it needs no BEGIN and COMMIT around
        # it: on PostgreSQL that saves two round trips. (SQLite's driver is already in autocommit
        # mode, see _configure_sqlite; there the option only stops our BEGIN.)
        self._single_reads = self.engine.execution_options(
            **({_SINGLE_READ: True} if self.is_sqlite else {"isolation_level": "AUTOCOMMIT"})
        )
        self._after_change: list[Callable[[], None]] = []
        # SQLite admits one writer at a time and makes the others retry by sleeping, so under
        # load a writer can be passed over until its busy timeout; this process's writers take
        # turns on a lock instead, and SQLite sees at most one of them at a time. (A writer waits
        # for its turn as long as for SQLite's lock: against a lock another process holds, up to
        # twice the busy timeout in all.)
        self._write_turn = threading.Lock() if self.is_sqlite else None
        # Two connections outside the pool, each for one read made all the time (see
        # identity.store.head): the change feed's, five times a second, and the health monitor's.
        self._head = HeadProbe(self.engine)
        self._health = HeadProbe(self.engine)

    def after_change(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` after every commit that appended to the change log, before ``write()`` returns.

        The server catches its caches up this way, so a change is honoured by the replica that
        made it before the RPC that made it answers. A hook must not raise.
        """
        self._after_change.append(hook)

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only transaction."""
        with self._guard(), self._readers() as session, session.begin():
            yield session

    @contextmanager
    def read_once(self) -> Iterator[Connection]:
        """A connection for one read statement, outside any transaction (see :mod:`identity.store.lookups`)."""
        with self._guard(), self._single_reads.connect() as connection:
            yield connection

    def change_log_head(self) -> int:
        """The change log's newest cursor (0 when empty), read the cheapest way (see :mod:`identity.store.head`)."""
        with self._guard():
            return self._head.head()

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A write transaction; on SQLite it holds the write lock from its first statement."""
        with self._guard(), self._turn_to_write(), self._writers() as session:
            with session.begin():
                yield session
            if session.info.get(_CHANGED):
                for hook in self._after_change:
                    hook()

    @contextmanager
    def _turn_to_write(self) -> Iterator[None]:
        if self._write_turn is None:
            yield
            return
        if not self._write_turn.acquire(timeout=SQLITE_BUSY_SECONDS):
            log.warning("database failure: no turn to write within %d s", SQLITE_BUSY_SECONDS)
            raise unavailable()
        try:
            yield
        finally:
            self._write_turn.release()

    @contextmanager
    def _guard(self) -> Iterator[None]:
        may_block()  # before a connection is taken: the event loop's thread tries elsewhere
        try:
            yield
        except IntegrityError:
            raise
        except (DBAPIError, PoolTimeoutError, self._head.driver_error) as exc:
            log.warning("database failure: %s", type(exc).__name__)
            raise unavailable() from exc

    def ping(self) -> bool:
        """Whether the database can be read now."""
        try:
            self._health.head()  # a read of a table, not SELECT 1: that never reads a SQLite file
            return True
        except (DBAPIError, PoolTimeoutError, self._health.driver_error):
            return False

    def migrate(self) -> None:
        """Bring the schema up to the newest Alembic revision."""
        config = Config()
        config.set_main_option("script_location", str(resources.files("identity.store") / "migrations"))
        with self._guard(), self.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def dispose(self) -> None:
        """Close every connection: the pooled ones and the probes'."""
        self._head.close()
        self._health.close()
        self.engine.dispose()
