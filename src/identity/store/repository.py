"""Repository: reads and writes domain objects inside one unit-of-work session."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, func, or_, select, text, update
from sqlalchemy.orm import Session
from sqlalchemy.sql import Select

from identity.domain.model import (
    AuditEvent,
    AuditOutcome,
    ChangeSubject,
    Key,
    KeyEvent,
    KeyEventType,
    KeyKind,
    KeyState,
    Organization,
    Principal,
    PrincipalKind,
    PrincipalState,
    ResourceRef,
)
from identity.store.bulk import append_rows
from identity.store.database import note_change
from identity.store.lookups import change_log_head
from identity.store.models import (
    ApiKeyRow,
    AuditEventRow,
    CreateKeyRequestRow,
    KeyChangeRow,
    OrganizationRow,
    PrincipalRow,
)
from identity.store.rows import KEY_EVENT_TYPES, KeySecrets, key_of, organization_of, principal_of, secrets_of

# PostgreSQL: change-log writers take this transaction lock before they draw a cursor, so cursors
# commit in the order they were drawn and a reader following the log never skips one.
CHANGE_LOG_LOCK = 0x1DE_C4A6
# PostgreSQL: committed change-log writes notify this channel, waking followers early.
CHANGE_CHANNEL = "identity_changes"
_AUDIT_TABLE = cast(Table, AuditEventRow.__table__)
_KEYS_TABLE = cast(Table, ApiKeyRow.__table__)
# One statement for a whole batch of last-use times, run as executemany (Core: no ORM per key).
_TOUCH_KEY = (
    update(_KEYS_TABLE)
    .where(_KEYS_TABLE.c.id == bindparam("touched_id"))
    .values(last_used_time=bindparam("touched_at"))
)


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Filters of ListAuditEvents; None or empty means no filter."""

    org_id: str = ""
    key_id: str = ""
    principal_id: str = ""
    action: str = ""
    outcome: AuditOutcome | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None


class Repository:
    """Every query the service makes, against one session (one transaction)."""

    def __init__(self, session: Session) -> None:
        """Work inside ``session``."""
        self.session = session

    # Organizations

    def add_organization(self, org: Organization) -> None:
        """Insert a new organization."""
        self.session.add(OrganizationRow(id=org.id, create_time=org.create_time, **_org_fields(org)))

    def save_organization(self, org: Organization) -> None:
        """Write an organization's mutable fields."""
        row = self.session.get_one(OrganizationRow, org.id)
        for name, value in _org_fields(org).items():
            setattr(row, name, value)

    def get_organization(self, org_id: str) -> Organization | None:
        """One organization, or None."""
        row = self.session.get(OrganizationRow, org_id)
        return organization_of(row) if row else None

    def platform_organization(self) -> Organization | None:
        """The platform organization created by ``identity bootstrap``, or None."""
        row = self.session.scalars(select(OrganizationRow).where(OrganizationRow.is_platform)).first()
        return organization_of(row) if row else None

    def list_organizations(self, only_id: str | None, after_id: str, limit: int) -> list[Organization]:
        """Organizations in id (creation) order after ``after_id``; ``only_id`` narrows to one."""
        query = select(OrganizationRow).where(OrganizationRow.id > after_id)
        if only_id is not None:
            query = query.where(OrganizationRow.id == only_id)
        return [
            organization_of(r) for r in self.session.scalars(query.order_by(OrganizationRow.id).limit(limit))
        ]

    # Principals

    def add_principal(self, principal: Principal) -> None:
        """Insert a new principal."""
        self.session.add(
            PrincipalRow(
                id=principal.id,
                org_id=principal.org_id,
                kind=principal.kind.value,
                create_time=principal.create_time,
                password_hash=None,
                **_principal_fields(principal),
            )
        )

    def save_principal(self, principal: Principal) -> None:
        """Write a principal's mutable fields."""
        row = self.session.get_one(PrincipalRow, principal.id)
        for name, value in _principal_fields(principal).items():
            setattr(row, name, value)

    def get_principal(self, principal_id: str, *, lock: bool = False) -> Principal | None:
        """One principal, or None; ``lock`` holds its row until commit (the quota lock)."""
        query = select(PrincipalRow).where(PrincipalRow.id == principal_id)
        if lock:
            query = query.with_for_update()
        row = self.session.scalars(query).first()
        return principal_of(row) if row else None

    def password_hash(self, principal_id: str) -> str | None:
        """A service account's password hash, or None (no such principal, or no password)."""
        row = self.session.get(PrincipalRow, principal_id)
        return row.password_hash if row else None

    def set_password_hash(self, principal_id: str, password_hash: str, now: datetime) -> None:
        """Replace a principal's password hash."""
        row = self.session.get_one(PrincipalRow, principal_id)
        row.password_hash = password_hash
        row.update_time = now

    def list_principals(
        self,
        org_id: str,
        kind: PrincipalKind | None,
        state: PrincipalState | None,
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> list[Principal]:
        """An organization's principals oldest first, after the ``(create_time, id)`` mark.

        Not plain id order: ids of users (``usr_``) and service accounts (``sa_``) differ in prefix.
        """
        query = select(PrincipalRow).where(PrincipalRow.org_id == org_id)
        query = _after(query, PrincipalRow.create_time, PrincipalRow.id, after)
        if kind is not None:
            query = query.where(PrincipalRow.kind == kind.value)
        if state is not None:
            query = query.where(PrincipalRow.state == state.value)
        query = query.order_by(PrincipalRow.create_time, PrincipalRow.id).limit(limit)
        return [principal_of(r) for r in self.session.scalars(query)]

    # Keys

    def add_key(self, key: Key, lookup: str, secret_hash: str) -> None:
        """Insert a new key with the hash of its secret."""
        self.session.add(
            ApiKeyRow(
                id=key.id,
                org_id=key.org_id,
                principal_id=key.principal_id,
                lookup=lookup,
                kind=key.kind.value,
                environment=key.environment,
                require_key_id=key.require_key_id,
                secret_hash=secret_hash,
                previous_secret_hash=None,
                create_time=key.create_time,
                created_by=key.created_by,
                last_used_time=None,
                **_key_fields(key),
            )
        )

    def save_key(self, key: Key) -> None:
        """Write a key's mutable metadata."""
        row = self.session.get_one(ApiKeyRow, key.id)
        for name, value in _key_fields(key).items():
            setattr(row, name, value)

    def replace_secret(self, key: Key, secret_hash: str, keep_previous_until: datetime | None) -> None:
        """Install a new secret hash; the old one keeps working until ``keep_previous_until``."""
        row = self.session.get_one(ApiKeyRow, key.id)
        row.previous_secret_hash = row.secret_hash if keep_previous_until else None
        row.previous_secret_expire_time = keep_previous_until
        row.secret_hash = secret_hash
        row.secret_version += 1
        for name, value in _key_fields(key).items():
            setattr(row, name, value)

    def get_key(self, key_id: str, *, lock: bool = False) -> Key | None:
        """One key, or None; ``lock`` holds its row until commit."""
        query = select(ApiKeyRow).where(ApiKeyRow.id == key_id)
        if lock:
            query = query.with_for_update()
        row = self.session.scalars(query).first()
        return key_of(row) if row else None

    def key_with_secrets(self, key_id: str) -> tuple[Key, KeySecrets] | None:
        """A key by id with its secret hashes and version."""
        row = self.session.get(ApiKeyRow, key_id)
        return (key_of(row), secrets_of(row)) if row else None

    def touch_keys(self, used: dict[str, datetime]) -> None:
        """Record when keys were last used (deleted keys are skipped silently)."""
        if used:
            self.session.execute(
                _TOUCH_KEY, [{"touched_id": key_id, "touched_at": when} for key_id, when in used.items()]
            )

    def lookup_of(self, key_id: str) -> str:
        """A key's lookup handle (kept across rotations)."""
        return self.session.get_one(ApiKeyRow, key_id).lookup

    def delete_key(self, key_id: str) -> None:
        """Remove a key and any idempotency record pointing at it."""
        self.session.execute(delete(CreateKeyRequestRow).where(CreateKeyRequestRow.key_id == key_id))
        self.session.execute(delete(ApiKeyRow).where(ApiKeyRow.id == key_id))

    def count_active_keys(self, principal_id: str, now: datetime) -> int:
        """How many of a principal's keys count against its quota: neither revoked nor expired."""
        query = select(func.count()).select_from(ApiKeyRow).where(ApiKeyRow.principal_id == principal_id)
        return int(self.session.scalar(_active(query, now)) or 0)

    def list_keys(
        self, org_id: str, principal_id: str, state: KeyState | None, now: datetime, after_id: str, limit: int
    ) -> list[Key]:
        """An organization's keys in id order after ``after_id``, optionally filtered."""
        query = select(ApiKeyRow).where(ApiKeyRow.org_id == org_id, ApiKeyRow.id > after_id)
        if principal_id:
            query = query.where(ApiKeyRow.principal_id == principal_id)
        if state is KeyState.ACTIVE:
            query = _active(query, now)
        elif state is KeyState.REVOKED:
            query = query.where(ApiKeyRow.revoke_time.is_not(None))
        elif state is KeyState.EXPIRED:
            query = query.where(ApiKeyRow.revoke_time.is_(None), ApiKeyRow.expire_time <= now)
        return [key_of(r) for r in self.session.scalars(query.order_by(ApiKeyRow.id).limit(limit))]

    def expiring_keys(
        self, org_id: str, now: datetime, until: datetime, after: tuple[datetime, str] | None, limit: int
    ) -> list[Key]:
        """Active keys expiring before ``until``, soonest first, after the ``(expire_time, id)`` mark."""
        query = _active(select(ApiKeyRow).where(ApiKeyRow.org_id == org_id), now).where(
            ApiKeyRow.expire_time <= until
        )
        query = _after(query, ApiKeyRow.expire_time, ApiKeyRow.id, after)
        query = query.order_by(ApiKeyRow.expire_time, ApiKeyRow.id).limit(limit)
        return [key_of(r) for r in self.session.scalars(query)]

    # Idempotency of CreateKey

    def key_id_for_request(self, org_id: str, request_id: str, since: datetime) -> str | None:
        """The key an earlier CreateKey with this request id made after ``since``, if any."""
        row = self.session.get(CreateKeyRequestRow, (org_id, request_id))
        if row is None:
            return None
        if row.create_time < since:
            self.session.delete(row)
            self.session.flush()
            return None
        return row.key_id

    def remember_request(self, org_id: str, request_id: str, key_id: str, now: datetime) -> None:
        """Record which key a CreateKey request id made."""
        self.session.add(
            CreateKeyRequestRow(org_id=org_id, request_id=request_id, key_id=key_id, create_time=now)
        )

    # Key change log: every key change, and every change of what a key's use depends on
    # (organization, principal, a revoked token), in the transaction of the change itself.

    def add_key_change(self, event_type: KeyEventType, key: Key, now: datetime) -> None:
        """Log a key change with the key's new snapshot (WatchKeyEvents streams these)."""
        log_change(self.session, event_type.value, key.org_id, key.id, key_to_json(key), now)

    def add_dependency_change(
        self, subject: ChangeSubject, org_id: str, subject_id: str, now: datetime
    ) -> None:
        """Log that an organization or principal changed, so every replica forgets what it cached."""
        log_change(self.session, subject.value, org_id, "", {"id": subject_id}, now)

    def key_changes_after(self, org_id: str, cursor: int, limit: int) -> list[KeyEvent]:
        """An organization's key events after ``cursor``, in cursor order."""
        query = (
            select(KeyChangeRow)
            .where(
                KeyChangeRow.org_id == org_id,
                KeyChangeRow.cursor > cursor,
                KeyChangeRow.type.in_(KEY_EVENT_TYPES),
            )
            .order_by(KeyChangeRow.cursor)
            .limit(limit)
        )
        return [
            KeyEvent(r.cursor, KeyEventType(r.type), key_from_json(r.snapshot), r.time)
            for r in self.session.scalars(query)
        ]

    def head_cursor(self) -> int:
        """The newest cursor of the change log (0 when it is empty)."""
        return change_log_head(self.session.connection())

    # Audit

    def add_audit_event(self, event: AuditEvent) -> None:
        """Insert an audit event."""
        self.add_audit_events([event])

    def add_audit_events(self, events: list[AuditEvent]) -> None:
        """Insert audit events in bulk (Core, not the ORM: a third cheaper; COPY on PostgreSQL)."""
        append_rows(self.session.connection(), _AUDIT_TABLE, [_audit_row(e) for e in events])

    def list_audit_events(self, where: AuditFilter, before_id: str | None, limit: int) -> list[AuditEvent]:
        """Audit events newest first (ids are time-ordered), before ``before_id``."""
        query = select(AuditEventRow)
        if where.org_id:
            query = query.where(AuditEventRow.org_id == where.org_id)
        if before_id is not None:
            query = query.where(AuditEventRow.id < before_id)
        if where.key_id:
            query = query.where(
                or_(AuditEventRow.actor_key_id == where.key_id, AuditEventRow.target == where.key_id)
            )
        if where.principal_id:
            query = query.where(
                or_(
                    AuditEventRow.actor_principal_id == where.principal_id,
                    AuditEventRow.target == where.principal_id,
                )
            )
        if where.action:
            query = query.where(AuditEventRow.action == where.action)
        if where.outcome is not None:
            query = query.where(AuditEventRow.outcome == where.outcome.value)
        if where.start_time is not None:
            query = query.where(AuditEventRow.time >= where.start_time)
        if where.end_time is not None:
            query = query.where(AuditEventRow.time < where.end_time)
        rows = self.session.scalars(query.order_by(AuditEventRow.id.desc()).limit(limit))
        return [_audit(r) for r in rows]


def log_change(
    session: Session, change_type: str, org_id: str, key_id: str, snapshot: dict[str, Any], now: datetime
) -> None:
    """Append one row to the change log inside ``session``'s transaction."""
    if session.get_bind().dialect.name == "postgresql":
        session.flush()  # the rest of the transaction's writes first: the lock is held only to commit
        session.execute(text("SELECT pg_advisory_xact_lock(:lock)"), {"lock": CHANGE_LOG_LOCK})
        session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": CHANGE_CHANNEL})
    session.add(KeyChangeRow(org_id=org_id, key_id=key_id, type=change_type, time=now, snapshot=snapshot))
    note_change(session)


def _text(value: str) -> str:
    # Clients choose user agents and peers (Envoy's Check takes them from the request body), so
    # each is cut to its column. PostgreSQL text cannot hold a NUL: one would fail the whole audit
    # write, and with it the background writer's batch, retried and failed again every flush, so
    # that no later event was ever written.
    return value.replace("\x00", "\ufffd")


def _audit_row(event: AuditEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "time": event.time,
        "org_id": event.org_id,
        "actor_principal_id": event.actor_principal_id,
        "actor_key_id": event.actor_key_id,
        "action": event.action,
        "target": event.target,
        "outcome": event.outcome.value,
        "reason": event.reason,
        "peer": _text(event.peer[:128]),
        "user_agent": _text(event.user_agent[:256]),
        "details": {_text(name): _text(value) for name, value in event.details.items()},
    }


def _after(
    query: Select[Any], time_column: Any, id_column: Any, mark: tuple[datetime, str] | None
) -> Select[Any]:
    """Rows after the ``(time, id)`` mark of a list ordered by that time, then id (keyset paging)."""
    if mark is None:
        return query
    mark_time, mark_id = mark
    return query.where(or_(time_column > mark_time, (time_column == mark_time) & (id_column > mark_id)))


def _active(query: Select[Any], now: datetime) -> Select[Any]:
    return query.where(
        ApiKeyRow.revoke_time.is_(None), or_(ApiKeyRow.expire_time.is_(None), ApiKeyRow.expire_time > now)
    )


def _org_fields(org: Organization) -> dict[str, Any]:
    policy = org.key_policy
    return {
        "display_name": org.display_name,
        "state": org.state.value,
        "is_platform": org.is_platform,
        "max_keys_per_user": policy.max_keys_per_user,
        "max_keys_per_service_account": policy.max_keys_per_service_account,
        "max_expiry_days": policy.max_expiry_days,
        "default_expiry_days": policy.default_expiry_days,
        "require_expiry": policy.require_expiry,
        "update_time": org.update_time,
    }


def _principal_fields(principal: Principal) -> dict[str, Any]:
    return {
        "display_name": principal.display_name,
        "state": principal.state.value,
        "update_time": principal.update_time,
    }


def _key_fields(key: Key) -> dict[str, Any]:
    return {
        "display_name": key.display_name,
        "description": key.description,
        "last4": key.last4,
        "scopes": list(key.scopes),
        "resources": [[r.type, r.id] for r in key.resources],
        "allowed_cidrs": list(key.allowed_cidrs),
        "update_time": key.update_time,
        "expire_time": key.expire_time,
        "revoke_time": key.revoke_time,
        "revoke_reason": key.revoke_reason,
    }


_KEY_TIMES = (
    "create_time",
    "update_time",
    "expire_time",
    "revoke_time",
    "last_used_time",
    "previous_secret_expire_time",
)


def key_to_json(key: Key) -> dict[str, Any]:
    """A key as JSON-ready data, for the change log snapshot."""
    data: dict[str, Any] = {name: getattr(key, name) for name in Key.__dataclass_fields__}
    for name in _KEY_TIMES:
        data[name] = data[name].isoformat() if data[name] else None
    data["kind"] = key.kind.value
    data["resources"] = [[r.type, r.id] for r in key.resources]
    data["scopes"] = list(key.scopes)
    data["allowed_cidrs"] = list(key.allowed_cidrs)
    return data


def key_from_json(data: dict[str, Any]) -> Key:
    """The inverse of :func:`key_to_json`."""
    values = dict(data)
    for name in _KEY_TIMES:
        values[name] = datetime.fromisoformat(values[name]) if values[name] else None
    values["kind"] = KeyKind(values["kind"])
    values["resources"] = tuple(ResourceRef(t, i) for t, i in values["resources"])
    values["scopes"] = tuple(values["scopes"])
    values["allowed_cidrs"] = tuple(values["allowed_cidrs"])
    return Key(**values)


def _audit(row: AuditEventRow) -> AuditEvent:
    return AuditEvent(
        id=row.id,
        time=row.time,
        org_id=row.org_id,
        actor_principal_id=row.actor_principal_id,
        actor_key_id=row.actor_key_id,
        action=row.action,
        target=row.target,
        outcome=AuditOutcome(row.outcome),
        reason=row.reason,
        peer=row.peer,
        user_agent=row.user_agent,
        details=dict(row.details),
    )
