"""The background writer: a row the database refuses costs that row only, never the batch."""

from __future__ import annotations

import pytest

from identity.app.background import BackgroundWriter
from identity.app.common import audit_event
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
