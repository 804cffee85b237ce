"""Audit rows as stored: written in bulk (COPY on PostgreSQL), read back as they were given."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy.exc import IntegrityError

from identity.domain.model import AuditEvent, AuditOutcome
from identity.ids import new_id
from identity.store.database import Database
from identity.store.repository import AuditFilter, Repository


def event(**overrides: object) -> AuditEvent:
    """A token exchange's audit event; ``overrides`` replace its fields."""
    fields: dict[str, object] = {
        "id": new_id("evt"),
        "time": datetime(2026, 12, 4, 23, 59, 58, 123456, tzinfo=timezone(timedelta(hours=2))),
        "org_id": "org_a",
        "actor_principal_id": "usr_a",
        "actor_key_id": "key_a",
        "action": "token.exchange",
        "target": "key_a",
        "outcome": AuditOutcome.DENIED,
        "reason": "INSUFFICIENT_SCOPE",
        "peer": "ipv6:[::1]:5050",
        "user_agent": 'grpc-python/1.7 "quoted"\ttab\\backslash\nnewline',
        "details": {"flow": "v2", "note": "ünïcode, comma, \\N, \t"},
    }
    fields.update(overrides)
    return AuditEvent(**fields)  # type: ignore[arg-type]


def stored(db: Database) -> list[AuditEvent]:
    """Every audit event in the database, oldest first."""
    with db.read() as session:
        return list(reversed(Repository(session).list_audit_events(AuditFilter(), None, 100)))


def test_a_batch_reads_back_field_for_field(db: Database) -> None:
    written = [
        event(),
        event(outcome=AuditOutcome.SUCCESS, reason="", details={}),
        event(peer="", user_agent=""),
    ]
    with db.write() as session:
        Repository(session).add_audit_events(written)
    read = stored(db)
    assert read == [replace(e, time=e.time.astimezone(UTC)) for e in written]
    assert read[0].time == written[0].time  # the same instant, whatever zone it was given in


def test_a_duplicate_id_fails_the_whole_batch_as_an_integrity_error(db: Database) -> None:
    first = event()
    with db.write() as session:
        Repository(session).add_audit_events([first])
    with pytest.raises(IntegrityError), db.write() as session:
        Repository(session).add_audit_events([event(), event(id=first.id)])
    assert [e.id for e in stored(db)] == [first.id]
