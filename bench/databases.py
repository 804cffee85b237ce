"""Scratch databases: a SQLite file in a temporary directory, or a uniquely named PostgreSQL database."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from bench.rpc import BenchError

DEFAULT_POSTGRESQL_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@contextmanager
def scratch_database(kind: str, postgresql_url: str, directory: Path) -> Iterator[str]:
    """Yield the URL of a new, empty database; a PostgreSQL one is dropped afterwards.

    ``kind`` is ``sqlite`` (a file under ``directory``) or ``postgresql``: a database named
    ``identity_bench_<random>`` is created next to the one ``postgresql_url`` names.
    """
    name = f"identity_bench_{uuid.uuid4().hex[:12]}"
    if kind == "sqlite":
        yield f"sqlite:///{directory / f'{name}.db'}"
        return
    admin = create_engine(postgresql_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as error:
        admin.dispose()
        raise BenchError(f"cannot create a database through {postgresql_url}: {error.orig}") from error
    try:
        yield make_url(postgresql_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
