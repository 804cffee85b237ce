"""The background writer: a row the database refuses costs that row only, never the batch; a key's
last use is written at most once a minute."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from identity.app.background import LAST_USED_RESOLUTION_SECONDS, BackgroundWriter
from identity.app.bootstrap import bootstrap
from identity.app.common import audit_event
from identity.crypto.hashing import SecretHasher
from identity.domain.model import AuditEvent, Caller, RequestInfo
from identity.store.database import Database
from identity.store.repository import AuditFilter, Repository

CALLER = Caller("usr_a", "org_a", "key_a", (), (), platform=False)


def event(reason: str = "") -> AuditEvent:
    """A check denial of the test caller."""
    return audit_event(RequestInfo(CALLER), "authz.check", "key_a", "org_a", reason=reason)


def written(db: Database) -> list[str]:
    """The ids of the audit events in the database."""
    with db.read() as session:
        return sorted(e.id for e in Repository(session).list_audit_events(AuditFilter(), None, 100))


def test_an_event_the_database_refuses_is_dropped_alone(db: Database) -> None:
    if db.is_sqlite:
        pytest.skip("SQLite stores a value of any length: nothing here is refused")
    writer = BackgroundWriter(db)
    refused = event(reason="R" * 65)  # the reason column holds 64 characters
    before, after = event(), event()
    for queued in (before, refused, after):
        writer.record(queued)
    writer.flush()
    assert written(db) == sorted([before.id, after.id])
    assert writer.dropped == 1
    later = event()
    writer.record(later)
    writer.flush()  # nothing is left queued to fail again
    assert written(db) == sorted([before.id, after.id, later.id])
    assert writer.dropped == 1


def last_used(db: Database, key_id: str) -> float | None:
    """A key's last_used_time as POSIX seconds, or None."""
    with db.read() as session:
        when = session.execute(
            text("SELECT last_used_time FROM api_keys WHERE id = :id"), {"id": key_id}
        ).scalar()
    if when is None:
        return None
    if isinstance(when, str):  # SQLite through text() gives the stored text back
        when = datetime.fromisoformat(when)
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def test_a_key_used_within_a_minute_of_its_last_write_is_not_written_again(
    db: Database, hasher: SecretHasher
) -> None:
    key_id = bootstrap(db, hasher).key.id
    now = [1_800_000_000.0]
    writer = BackgroundWriter(db, clock=lambda: now[0])
    writer.touch(key_id)
    writer.flush()
    assert last_used(db, key_id) == 1_800_000_000.0
    now[0] += LAST_USED_RESOLUTION_SECONDS - 1
    writer.touch(key_id)
    writer.flush()
    assert last_used(db, key_id) == 1_800_000_000.0
    now[0] += 1
    writer.touch(key_id)
    writer.touch(key_id)  # the latest use of a flush is the one written
    now[0] += 5
    writer.touch(key_id)
    writer.flush()
    assert last_used(db, key_id) == 1_800_000_000.0 + LAST_USED_RESOLUTION_SECONDS + 5
