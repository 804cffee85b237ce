"""Reading the audit trail."""

from __future__ import annotations

from dataclasses import replace

from identity.app.common import audit_event, visible_organization
from identity.domain.errors import invalid
from identity.domain.model import AuditEvent, AuditOutcome, RequestInfo
from identity.domain.paging import decode_token, encode_token, page
from identity.domain.validation import Violations, validate_page_size
from identity.store.database import Database
from identity.store.repository import AuditFilter, Repository


class AuditLog:
    """Lists audit events."""

    def __init__(self, db: Database) -> None:
        """Work against ``db``."""
        self._db = db

    def list_page(
        self, info: RequestInfo, where: AuditFilter, page_size: int, page_token: str
    ) -> tuple[list[AuditEvent], str]:
        """Events newest first; a caller sees its own organization's, a platform caller any."""
        size = validate_page_size(page_size)
        problems = Violations()
        if where.key_id:
            problems.ident("key_id", where.key_id, "key")
        if where.principal_id:
            problems.ident("principal_id", where.principal_id)
        problems.text("action", where.action, max_length=64)
        problems.raise_if_any()
        if where.start_time and where.end_time and where.start_time >= where.end_time:
            raise invalid("end_time", "must be after start_time")
        if not where.org_id and not info.caller.platform:
            where = replace(where, org_id=info.caller.org_id)
        filters = [where]
        before = decode_token(page_token, filters, str)
        with self._db.read() as session:
            repo = Repository(session)
            if where.org_id:
                visible_organization(repo, info.caller, where.org_id)
            events, more = page(repo.list_audit_events(where, before, size + 1), size)
        return events, encode_token(events[-1].id, filters) if more else ""

    def record_refusal(
        self, info: RequestInfo, action: str, target: str, org_id: str, outcome: AuditOutcome, reason: str
    ) -> None:
        """Audit an admin action that was refused or failed (its change, if any, rolled back)."""
        event = audit_event(info, action, target, org_id, outcome=outcome, reason=reason)
        with self._db.write() as session:
            Repository(session).add_audit_event(event)
