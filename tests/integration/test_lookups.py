"""The cold path's single-statement read of a key by its lookup handle, on both databases."""

from __future__ import annotations

from sqlalchemy import event
from sqlalchemy.engine import Connection

from identity.app.bootstrap import bootstrap
from identity.crypto.hashing import SecretHasher
from identity.store.database import Database
from identity.store.lookups import credential_by_lookup
from identity.store.repository import Repository


def test_the_read_gives_what_the_orm_reads_give(db: Database, hasher: SecretHasher) -> None:
    issued = bootstrap(db, hasher)
    with db.read() as session:
        repo = Repository(session)
        lookup = repo.lookup_of(issued.key.id)
        stored = repo.key_with_secrets(issued.key.id)
        assert stored is not None
        key, secrets = stored
        expected = (key, secrets, repo.get_organization(key.org_id), repo.get_principal(key.principal_id))
    with db.read_once() as connection:
        found = credential_by_lookup(connection, lookup)
    assert found == expected
    assert found is not None
    assert found[0].scopes == ("*",) and found[1].secret_hash.startswith("$argon2id$")


def test_an_unknown_lookup_handle_finds_nothing(db: Database, hasher: SecretHasher) -> None:
    bootstrap(db, hasher)
    with db.read_once() as connection:
        assert credential_by_lookup(connection, "0" * 16) is None


def test_the_read_is_one_statement_outside_a_transaction(db: Database, hasher: SecretHasher) -> None:
    issued = bootstrap(db, hasher)
    with db.read() as session:
        lookup = Repository(session).lookup_of(issued.key.id)
    sent: list[str] = []

    def record(connection: Connection, _cursor: object, statement: str, *_rest: object) -> None:
        # PostgreSQL's driver sends BEGIN itself unless the connection is in autocommit mode;
        # SQLite's never does (the server sends it, and it would be seen here).
        autocommit = db.is_sqlite or connection.connection.dbapi_connection.autocommit  # type: ignore[union-attr]
        sent.append(statement.split()[0] + ("" if autocommit else " in a transaction"))

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        with db.read_once() as connection:
            assert credential_by_lookup(connection, lookup) is not None
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    assert sent == ["SELECT"]
