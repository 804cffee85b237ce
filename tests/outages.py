"""Database outages a test can start and end while a server runs.

PostgreSQL: the server reaches the database through a :class:`~tests.proxy.TcpProxy`; the cut
drops every connection and refuses new ones. SQLite: another process takes the file's locks
(see :mod:`tests.sqlite_locks` for what does and does not reproduce an outage there).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy.engine import make_url

from tests.proxy import tcp_proxy
from tests.sqlite_locks import EVERYTHING, SqliteLockHolder


@dataclass(frozen=True)
class Outage:
    """How the server must reach the database (``url``), and how to take it away and give it back."""

    kind: str
    url: str
    cut: Callable[[], None]
    restore: Callable[[], None]


@contextmanager
def database_outage(database_url: str, sqlite_mode: str = EVERYTHING) -> Iterator[Outage]:
    """An outage of the database at ``database_url``, restored (if still cut) when the block ends."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        assert url.database
        holder = SqliteLockHolder(url.database, sqlite_mode)
        try:
            yield Outage("sqlite", database_url, holder.acquire, holder.release)
        finally:
            holder.release()
        return
    with tcp_proxy((url.host or "127.0.0.1", url.port or 5432)) as proxy:
        proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        yield Outage("postgresql", proxied, proxy.cut, proxy.restore)
