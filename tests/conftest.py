"""Shared fixtures: a database per test on SQLite and (when configured) PostgreSQL, and a real
server on port 0 with a bootstrapped platform key."""

from __future__ import annotations

import base64
import os
import queue
import secrets
import shutil
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from identity.app.bootstrap import bootstrap
from identity.config import Settings
from identity.crypto.hashing import Argon2Profile, SecretHasher
from identity.server import IdentityServer, build_server
from identity.store.database import Database
from identity.store.models import Base
from tests.helpers import Admin

PG_ENV = "IDENTITY_TEST_DATABASE_URL"
# A cheaper argon2id profile keeps the suite fast; the production default is covered in unit tests.
TEST_ARGON2 = Argon2Profile(memory_kib=8 * 1024, time_cost=1, parallelism=1)
# Tests never touch a key-encryption key file in the working tree.
TEST_KEK = base64.b64encode(secrets.token_bytes(32)).decode()


DATABASE_KINDS = ["sqlite", "postgresql"]


class _MadeAhead:
    """PostgreSQL databases, copies of ``template``, readied before tests ask for them and cleaned
    up after, off their path: a thread of its own does that work while tests run.

    CREATE DATABASE takes about 0.2 s and DROP DATABASE 0.1 s, more than most tests take. So with
    ``recycle`` a database whose test is over is not dropped but emptied (its connections ended,
    every table truncated and its sequences restarted, about 40 ms), which leaves it as the
    template was, and handed to the next test.
    """

    AHEAD = 2

    def __init__(self, base: str, template: str, *, recycle: bool) -> None:
        self.base = base
        self.template = template
        self.recycle = recycle
        self._admin = create_engine(base, isolation_level="AUTOCOMMIT")
        self._made: queue.Queue[str | Exception] = queue.Queue()
        self._used: queue.Queue[str | None] = queue.Queue()  # None: stop
        self._worker = threading.Thread(target=self._work, name="test-databases", daemon=True)
        self._worker.start()

    def take(self) -> str:
        """The name of a database as the template is; give it back with :meth:`give_back`."""
        made = self._made.get(timeout=60)
        if isinstance(made, Exception):
            raise made
        return made

    def give_back(self, name: str) -> None:
        """Have database ``name`` emptied for the next test, or dropped, whatever is still connected to it."""
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
            try:  # given-back databases first: they free what the creates then use
                used = self._used.get(timeout=0 if ahead < self.AHEAD else None)
            except queue.Empty:
                used = ""
            if used is None:
                return
            if used and self.recycle and self._emptied(used):
                self._made.put(used)
                continue
            if used:
                self._run(f'DROP DATABASE IF EXISTS "{used}" WITH (FORCE)')
                ahead -= 1
                continue
            name = f"identity_test_{uuid.uuid4().hex[:12]}"
            try:
                self._run(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
            except Exception as error:  # the test that takes it reports it
                self._made.put(error)
                return
            self._made.put(name)
            ahead += 1

    def _emptied(self, name: str) -> bool:
        """Empty database ``name`` as the template is; False if that failed (it is then dropped)."""
        self._run(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{name}' AND pid <> pg_backend_pid()"
        )
        engine = create_engine(make_url(self.base).set(database=name))
        try:
            with engine.begin() as connection:
                connection.execute(text(f"TRUNCATE {_TABLES} RESTART IDENTITY"))
            return True
        except Exception:  # the drop that follows cleans up whatever this left
            return False
        finally:
            engine.dispose()

    def _run(self, statement: str) -> None:
        with self._admin.connect() as connection:
            connection.execute(text(statement))


# Every table the models declare: what a test may have written (alembic_version stays as it is).
_TABLES = ", ".join(f'"{table.name}"' for table in Base.metadata.sorted_tables)


class _Templates:
    """Per kind of database, one migrated once per session; each test that wants a migrated
    database gets a copy of it, which costs a file copy instead of running every migration."""

    def __init__(self) -> None:
        self._postgresql: dict[bool, _MadeAhead] = {}
        self._postgresql_template: tuple[str, str] | None = None  # (server URL, database name)
        self._sqlite_template: Path | None = None

    def postgresql(self, base: str, migrated: bool) -> _MadeAhead:
        """Where new PostgreSQL databases come from: empty ones, or copies of the migrated template."""
        if migrated not in self._postgresql:
            template = self._migrated_postgresql(base) if migrated else "template1"
            self._postgresql[migrated] = _MadeAhead(base, template, recycle=migrated)
        return self._postgresql[migrated]

    def sqlite(self, tmp_path_factory: pytest.TempPathFactory) -> Path:
        """The migrated SQLite file to copy."""
        if self._sqlite_template is None:
            path = tmp_path_factory.mktemp("template") / "identity.db"
            _migrate(f"sqlite:///{path}")
            # Disposed, the last connection checkpointed the write-ahead log: the file is whole.
            assert not path.with_name(path.name + "-wal").exists()
            self._sqlite_template = path
        return self._sqlite_template

    def close(self) -> None:
        """Drop every database made, the template last."""
        for made in self._postgresql.values():
            made.close()
        if self._postgresql_template is not None:
            base, name = self._postgresql_template
            admin = create_engine(base, isolation_level="AUTOCOMMIT")
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()

    def _migrated_postgresql(self, base: str) -> str:
        name = f"identity_test_template_{uuid.uuid4().hex[:12]}"
        admin = create_engine(base, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        self._postgresql_template = (base, name)
        # A template must have no connections when it is copied: _migrate leaves none.
        _migrate(make_url(base).set(database=name).render_as_string(hide_password=False))
        return name


def _migrate(url: str) -> None:
    database = Database(url)
    try:
        database.migrate()
    finally:
        database.dispose()


_templates = _Templates()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Drop the PostgreSQL databases made ahead for tests that did not come, and the template."""
    _templates.close()


@contextmanager
def fresh_database(
    kind: str, tmp_path_factory: pytest.TempPathFactory, *, migrated: bool = False
) -> Iterator[str]:
    """The URL of a new database of ``kind``, empty or ``migrated``: a SQLite file, or a uniquely
    named PostgreSQL database dropped afterwards (skips the test when PostgreSQL is not configured)."""
    if kind == "sqlite":
        path = tmp_path_factory.mktemp("db") / "identity.db"
        if migrated:
            shutil.copyfile(_templates.sqlite(tmp_path_factory), path)
        yield f"sqlite:///{path}"
        return
    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(f"{PG_ENV} is not set: PostgreSQL variant skipped")
    made = _templates.postgresql(base, migrated)
    name = made.take()
    try:
        yield make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        made.give_back(name)


@pytest.fixture(params=DATABASE_KINDS)
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh, migrated database: a SQLite file, or a uniquely named PostgreSQL database dropped afterwards."""
    with fresh_database(request.param, tmp_path_factory, migrated=True) as url:
        yield url


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    """A migrated database."""
    database = Database(database_url)
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
