"""The change log's newest cursor, read on a DBAPI connection kept for that one question.

Every process polls the change log five times a second, and nearly every poll finds nothing
new. A poll holds the GIL while its Python runs, so the event loop answering warm calls waits for
it, and the calls in flight meanwhile make the tail of the latency. Through the engine, a poll
is a pool checkout (with a pre-ping round trip on PostgreSQL), an execution context and a result
object: in a serving process, where each poll finds the CPU's caches cold, that cost about 1.3 ms
of CPU a poll on either database. Asked on a connection of its own, outside the pool, "what is
the newest cursor?" is one short statement, about 0.25 ms there on SQLite and 0.4 ms on
PostgreSQL (bench/RESULTS.md); only when the answer is news does the feed read the changes
through the engine. The health monitor's once-a-second ping asks the same, on a
probe of its own, so that neither waits behind the other.
"""

from __future__ import annotations

import threading
from contextlib import suppress

from sqlalchemy.engine import Engine
from sqlalchemy.pool import PoolProxiedConnection

from identity.store.lookups import CHANGE_LOG_HEAD


class HeadProbe:
    """Reads the newest cursor of the change log on a connection of its own, outside the pool."""

    def __init__(self, engine: Engine) -> None:
        """Read through ``engine``'s dialect and driver; the connection is made on first use."""
        self._engine = engine
        self._statement = str(CHANGE_LOG_HEAD.compile(dialect=engine.dialect))
        self._driver_error: type[Exception] = engine.dialect.loaded_dbapi.Error
        self._connection: PoolProxiedConnection | None = None  # detached from the pool
        self._lock = threading.Lock()  # one statement at a time on the one connection

    def head(self) -> int:
        """The newest cursor (0 when the log is empty); raises the driver's own errors (see ``driver_error``).

        After an error the connection is dropped, and the next read makes a new one.
        """
        with self._lock:
            if self._connection is None:
                self._connection = self._connect()
            try:
                cursor = self._connection.cursor()
                try:
                    cursor.execute(self._statement)
                    # fetchall, not fetchone: SQLite ends the statement, and its read snapshot, only
                    # once asked past the last row.
                    rows = cursor.fetchall()
                finally:
                    cursor.close()
            except Exception:
                self._drop()
                raise
        return int(rows[0][0] or 0)

    @property
    def driver_error(self) -> type[Exception]:
        """The base class of the driver's errors, which :meth:`head` raises unwrapped."""
        return self._driver_error

    def close(self) -> None:
        """Close the connection (a later read makes a new one)."""
        with self._lock:
            self._drop()

    def _connect(self) -> PoolProxiedConnection:
        connection = self._engine.raw_connection()
        try:
            # Out of the pool for good: set to autocommit here, it must never serve anyone else.
            connection.detach()
            connection.rollback()  # whatever the pool's checkout (pre-ping) left open
            assert connection.dbapi_connection is not None  # None only once closed
            self._engine.dialect.set_isolation_level(connection.dbapi_connection, "AUTOCOMMIT")
        except Exception:
            connection.close()
            raise
        return connection

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            # Broken already, most likely: the error that brought us here is the one to report.
            with suppress(self._driver_error):
                connection.close()
