"""Shared fixtures: a database per test on SQLite and (when configured) PostgreSQL, and a real
server on port 0 with a bootstrapped platform key."""

from __future__ import annotations

import base64
import os
import queue
import secrets
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import grpc
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from identity.app.bootstrap import bootstrap
from identity.config import Settings
from identity.crypto.hashing import Argon2Profile, SecretHasher
from identity.server import IdentityServer, build_server
from identity.store.database import Database
from tests.helpers import Admin

PG_ENV = "IDENTITY_TEST_DATABASE_URL"
# A cheaper argon2id profile keeps the suite fast; the production default is covered in unit tests.
TEST_ARGON2 = Argon2Profile(memory_kib=8 * 1024, time_cost=1, parallelism=1)
# Tests never touch a key-encryption key file in the working tree.
TEST_KEK = base64.b64encode(secrets.token_bytes(32)).decode()


DATABASE_KINDS = ["sqlite", "postgresql"]


class _EmptyDatabases:
    """Empty PostgreSQL databases, made before tests ask for them and dropped after, off their path.

    CREATE DATABASE takes about 0.2 s, nearly all of it waiting for the disk: a thread of its own
    makes the next databases and drops the used ones while tests run, so hundreds of PostgreSQL
    tests wait for neither.
    """

    AHEAD = 2

    def __init__(self, base: str) -> None:
        self.base = base
        self._admin = create_engine(base, isolation_level="AUTOCOMMIT")
        self._made: queue.Queue[str | Exception] = queue.Queue()
        self._used: queue.Queue[str | None] = queue.Queue()  # None: stop
        self._worker = threading.Thread(target=self._work, name="test-databases", daemon=True)
        self._worker.start()

    def take(self) -> str:
        """The name of a new, empty database; give it back with :meth:`give_back`."""
        made = self._made.get(timeout=60)
        if isinstance(made, Exception):
            raise made
        return made

    def give_back(self, name: str) -> None:
        """Have database ``name`` dropped, whatever is still connected to it."""
        self._used.put(name)

    def close(self) -> None:
        """Drop every database given back or made ahead, and stop."""
        self._used.put(None)
        self._worker.join()
        while not self._made.empty():
            made = self._made.get()
            if isinstance(made, str):
                self._run(f'DROP DATABASE IF EXISTS "{made}" WITH (FORCE)')
        self._admin.dispose()

    def _work(self) -> None:
        ahead = 0
        while True:
            try:  # drops first: they free what the creates then use
                used = self._used.get(timeout=0 if ahead < self.AHEAD else None)
            except queue.Empty:
                used = ""
            if used is None:
                return
            if used:
                self._run(f'DROP DATABASE IF EXISTS "{used}" WITH (FORCE)')
                ahead -= 1
                continue
            name = f"identity_test_{uuid.uuid4().hex[:12]}"
            try:
                self._run(f'CREATE DATABASE "{name}"')
            except Exception as error:  # the test that takes it reports it
                self._made.put(error)
                return
            self._made.put(name)
            ahead += 1

    def _run(self, statement: str) -> None:
        with self._admin.connect() as connection:
            connection.execute(text(statement))


_empty_databases: _EmptyDatabases | None = None


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Drop the PostgreSQL databases made ahead for tests that did not come."""
    if _empty_databases is not None:
        _empty_databases.close()


@contextmanager
def fresh_database(kind: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a new, empty database of ``kind``: a SQLite file, or a uniquely named PostgreSQL
    database dropped afterwards (skips the test when PostgreSQL is not configured)."""
    global _empty_databases
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'identity.db'}"
        return
    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(f"{PG_ENV} is not set: PostgreSQL variant skipped")
    if _empty_databases is None:
        _empty_databases = _EmptyDatabases(base)
    name = _empty_databases.take()
    try:
        yield make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        _empty_databases.give_back(name)


@pytest.fixture(params=DATABASE_KINDS)
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh, empty database: a SQLite file, or a uniquely named PostgreSQL database dropped afterwards."""
    with fresh_database(request.param, tmp_path_factory) as url:
        yield url


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    """A migrated database."""
    database = Database(database_url)
    database.migrate()
    yield database
    database.dispose()


@pytest.fixture
def hasher() -> SecretHasher:
    """The test argon2id hasher."""
    return SecretHasher(TEST_ARGON2)


@dataclass
class Harness:
    """A running server, a channel to it, and the bootstrapped platform credential."""

    server: IdentityServer
    port: int
    channel: grpc.Channel
    platform_key: str
    platform_org_id: str
    platform_principal_id: str
    db: Database

    @property
    def address(self) -> str:
        """host:port of the server."""
        return f"127.0.0.1:{self.port}"

    def admin(self, api_key: str | None = None) -> Admin:
        """Stubs that call as ``api_key`` (the platform key by default)."""
        return Admin(self.channel, self.platform_key if api_key is None else api_key)


@pytest.fixture
def settings(database_url: str, request: pytest.FixtureRequest) -> Settings:
    """Settings for a test server on the test database; ``@pytest.mark.settings(...)`` overrides fields."""
    marker = request.node.get_closest_marker("settings")
    return Settings(
        database_url=database_url,
        listen="127.0.0.1:0",
        argon2=TEST_ARGON2,
        # Room for the bursts of concurrent key creations that quota tests fire.
        argon2_queue=64,
        shutdown_grace_seconds=1,
        kek=TEST_KEK,
    ).with_overrides(**(marker.kwargs if marker else {}))


@pytest.fixture
def harness(settings: Settings) -> Iterator[Harness]:
    """A real server on port 0 over a fresh database, with a platform key."""
    server, port = build_server(settings)
    server.db.migrate()
    issued = bootstrap(server.db, SecretHasher(settings.argon2))
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Harness(
            server, port, channel, issued.api_key, issued.key.org_id, issued.key.principal_id, server.db
        )
    finally:
        channel.close()
        server.stop(0)
