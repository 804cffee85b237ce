"""The single-statement reads beside the hot path (a key by its lookup handle, the change log), on both databases."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import event
from sqlalchemy.engine import Connection

from identity.app.bootstrap import bootstrap
from identity.crypto.hashing import SecretHasher
from identity.domain.model import ChangeSubject
from identity.store.database import Database
from identity.store.lookups import changes_after, credential_by_lookup
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


def statements_sent(db: Database, read: Callable[[Connection], object]) -> list[str]:
    """What ``read`` sends to the database, each statement's first word, noting a transaction."""
    sent: list[str] = []

    def record(connection: Connection, _cursor: object, statement: str, *_rest: object) -> None:
        # PostgreSQL's driver sends BEGIN itself unless the connection is in autocommit mode;
        # SQLite's never does (the server sends it, and it would be seen here).
        autocommit = db.is_sqlite or connection.connection.dbapi_connection.autocommit  # type: ignore[union-attr]
        sent.append(statement.split()[0] + ("" if autocommit else " in a transaction"))

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        with db.read_once() as connection:
            read(connection)
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    return sent


def test_the_read_is_one_statement_outside_a_transaction(db: Database, hasher: SecretHasher) -> None:
    issued = bootstrap(db, hasher)
    with db.read() as session:
        lookup = Repository(session).lookup_of(issued.key.id)
    assert statements_sent(db, lambda connection: credential_by_lookup(connection, lookup)) == ["SELECT"]


def test_the_change_log_poll_is_one_statement_outside_a_transaction(
    db: Database, hasher: SecretHasher
) -> None:
    bootstrap(db, hasher)
    assert statements_sent(db, lambda connection: changes_after(connection, 0, 500)) == ["SELECT"]


def test_the_change_log_reads_every_change_after_the_cursor_in_order(
    db: Database, hasher: SecretHasher
) -> None:
    issued = bootstrap(db, hasher)
    with db.read_once() as connection:
        logged = changes_after(connection, 0, 500)
    assert logged, "bootstrap logs the platform key's creation"
    cursors = [change.cursor for change in logged]
    assert cursors == sorted(cursors) and len(set(cursors)) == len(cursors)
    assert (logged[-1].subject, logged[-1].subject_id) == (ChangeSubject.KEY, issued.key.id)
    with db.read_once() as connection:
        assert changes_after(connection, cursors[0], 500) == logged[1:]
        assert changes_after(connection, cursors[-1], 500) == []
        assert changes_after(connection, 0, 1) == logged[:1]
