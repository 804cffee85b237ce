"""Helpers every use case shares: the clock, audit events, and organization visibility."""

from __future__ import annotations

from datetime import UTC, datetime

from identity.domain.errors import not_found
from identity.domain.model import AuditEvent, AuditOutcome, Caller, Organization, RequestInfo
from identity.domain.validation import Violations, is_id
from identity.ids import new_id
from identity.store.repository import Repository


def utcnow() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


def audit_event(
    info: RequestInfo,
    action: str,
    target: str,
    org_id: str,
    *,
    outcome: AuditOutcome = AuditOutcome.SUCCESS,
    reason: str = "",
    details: dict[str, str] | None = None,
) -> AuditEvent:
    """An audit event for an action taken by ``info.caller``.

    ``target`` is kept only when it is a well-formed id: a refused request may carry anything
    where an id belongs (a pasted API key, a NUL, a kilobyte), and none of that belongs in the
    audit trail.
    """
    return AuditEvent(
        id=new_id("evt"),
        time=utcnow(),
        org_id=org_id,
        actor_principal_id=info.caller.principal_id,
        actor_key_id=info.caller.key_id,
        action=action,
        target=target if is_id(target) else "",
        outcome=outcome,
        reason=reason,
        peer=info.peer,
        user_agent=info.user_agent,
        details=details or {},
    )


def visible_organization(
    repo: Repository, caller: Caller, org_id: str, field: str = "org_id"
) -> Organization:
    """The organization ``org_id`` if the caller may act in it; NOT_FOUND otherwise (reveal nothing)."""
    problems = Violations()
    problems.ident(field, org_id, "org")
    problems.raise_if_any()
    org = repo.get_organization(org_id) if caller.may_act_in(org_id) else None
    if org is None:
        raise not_found("organization", org_id)
    return org
