"""Waiting for the next change-log write: PostgreSQL LISTEN where available, a plain sleep elsewhere.

Either way the caller polls the change log after each wait, so notifications only make it
wake early: a lost notification or a broken listening connection costs at most one wait.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

import psycopg
from psycopg import sql
from sqlalchemy.engine import URL

from identity.store.repository import CHANGE_CHANNEL

log = logging.getLogger(__name__)

RECONNECT_SECONDS = 5.0


class ChangeWaiter(Protocol):
    """Blocks until a change may have been logged, or a timeout."""

    def wait(self, timeout: float) -> None:
        """Return after at most ``timeout`` seconds, earlier when a change was logged."""
        ...

    def close(self) -> None:
        """End the current wait soon and every later one at once; callable from any thread."""
        ...


class Sleeper:
    """A waiter that knows nothing of changes: it sleeps for the whole timeout."""

    def __init__(self) -> None:
        """Create an open sleeper."""
        self._closed = threading.Event()

    def wait(self, timeout: float) -> None:
        """Sleep ``timeout`` seconds (or until closed)."""
        self._closed.wait(timeout)

    def close(self) -> None:
        """Stop sleeping."""
        self._closed.set()


class Listener:
    """LISTENs on a dedicated PostgreSQL connection; sleeps instead while that connection is down."""

    def __init__(self, url: URL) -> None:
        """Listen on the database at ``url`` (a SQLAlchemy URL of any PostgreSQL driver)."""
        self._conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._connection: psycopg.Connection[tuple[object, ...]] | None = None
        self._retry_at = 0.0
        self._closed = threading.Event()

    def wait(self, timeout: float) -> None:
        """Return at the first notification on the change channel, or after ``timeout``."""
        connection = self._connect()
        if connection is None:
            self._closed.wait(timeout)
            return
        try:
            for _ in connection.notifies(timeout=timeout, stop_after=1):
                pass
            for _ in connection.notifies(timeout=0):  # one poll serves every notification queued
                pass
        except psycopg.Error as error:
            if not self._closed.is_set():
                log.warning("change notifications lost (%s); polling until reconnected", type(error).__name__)
            self._drop()
        if self._closed.is_set():
            self._drop()

    def close(self) -> None:
        """Close the listening connection once the current wait returns (within its timeout)."""
        self._closed.set()

    def _connect(self) -> psycopg.Connection[tuple[object, ...]] | None:
        if self._connection is not None or self._closed.is_set() or time.monotonic() < self._retry_at:
            return self._connection
        try:
            connection = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=2)
            connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANGE_CHANNEL)))
        except psycopg.Error:
            self._retry_at = time.monotonic() + RECONNECT_SECONDS
            return None
        self._connection = connection
        return connection

    def _drop(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        self._retry_at = time.monotonic() + RECONNECT_SECONDS


def change_waiter(url: URL) -> ChangeWaiter:
    """A :class:`Listener` for PostgreSQL, a :class:`Sleeper` for any other database."""
    return Listener(url) if url.get_backend_name() == "postgresql" else Sleeper()
