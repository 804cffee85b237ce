"""Principal use cases: users and service accounts."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from identity.app.common import audit_event, utcnow, visible_organization
from identity.crypto.hashing import Hasher
from identity.domain.errors import failed_precondition, invalid, not_found
from identity.domain.model import ChangeSubject, Principal, PrincipalKind, PrincipalState, RequestInfo
from identity.domain.paging import decode_time_mark, encode_time_mark, page
from identity.domain.validation import MAX_NAME, Violations, validate_page_size
from identity.ids import new_id
from identity.store.database import Database
from identity.store.repository import Repository

MIN_PASSWORD = 16
MAX_PASSWORD = 256


def visible_principal(repo: Repository, info: RequestInfo, principal_id: str, field: str) -> Principal:
    """The principal if the caller may see it; NOT_FOUND otherwise. ``field`` names the id field."""
    problems = Violations()
    problems.ident(field, principal_id)
    problems.raise_if_any()
    principal = repo.get_principal(principal_id)
    if principal is None or not info.caller.may_act_in(principal.org_id):
        raise not_found("principal", principal_id)
    return principal


class Principals:
    """Create, read, list and change principals."""

    def __init__(self, db: Database, hasher: Hasher) -> None:
        """Work against ``db``; hash passwords with ``hasher``."""
        self._db = db
        self._hasher = hasher

    def create(
        self, info: RequestInfo, org_id: str, kind: PrincipalKind | None, display_name: str
    ) -> Principal:
        """Create an ACTIVE principal in an organization the caller may act in."""
        problems = Violations()
        if kind is None:
            problems.add("kind", "must be PRINCIPAL_KIND_USER or PRINCIPAL_KIND_SERVICE_ACCOUNT")
        problems.text("display_name", display_name, max_length=MAX_NAME, required=True)
        problems.raise_if_any()
        assert kind is not None
        now = utcnow()
        principal = Principal(
            new_id(kind.id_prefix), org_id, kind, display_name, PrincipalState.ACTIVE, now, now
        )
        with self._db.write() as session:
            repo = Repository(session)
            visible_organization(repo, info.caller, org_id)
            repo.add_principal(principal)
            repo.add_audit_event(
                audit_event(info, "principal.create", principal.id, org_id, details={"kind": kind.value})
            )
        return principal

    def get(self, info: RequestInfo, principal_id: str) -> Principal:
        """One principal the caller may see."""
        with self._db.read() as session:
            return visible_principal(Repository(session), info, principal_id, "id")

    def list_page(
        self,
        info: RequestInfo,
        org_id: str,
        kind: PrincipalKind | None,
        state: PrincipalState | None,
        page_size: int,
        page_token: str,
    ) -> tuple[list[Principal], str]:
        """An organization's principals, optionally filtered by kind and state."""
        size = validate_page_size(page_size)
        filters = [org_id, kind, state]
        after = decode_time_mark(page_token, filters)
        with self._db.read() as session:
            repo = Repository(session)
            visible_organization(repo, info.caller, org_id)
            found, more = page(repo.list_principals(org_id, kind, state, after, size + 1), size)
        return found, encode_time_mark(found[-1].create_time, found[-1].id, filters) if more else ""

    def update(self, info: RequestInfo, principal_id: str, changes: dict[str, Any]) -> Principal:
        """Apply masked changes: ``display_name``, ``state``."""
        problems = Violations()
        if "display_name" in changes:
            problems.text(
                "principal.display_name", changes["display_name"], max_length=MAX_NAME, required=True
            )
        problems.raise_if_any()
        with self._db.write() as session:
            repo = Repository(session)
            principal = visible_principal(repo, info, principal_id, "principal.id")
            if principal.id == info.caller.principal_id and changes.get("state") is PrincipalState.DISABLED:
                raise failed_precondition("a caller cannot disable its own principal")
            updated = replace(principal, **changes, update_time=utcnow())
            repo.save_principal(updated)
            repo.add_dependency_change(
                ChangeSubject.PRINCIPAL, principal.org_id, principal.id, updated.update_time
            )
            repo.add_audit_event(
                audit_event(
                    info,
                    "principal.update",
                    principal.id,
                    principal.org_id,
                    details={"fields": ",".join(sorted(changes))},
                )
            )
        return updated

    def set_password(self, info: RequestInfo, principal_id: str, password: str) -> Principal:
        """Set a service account's password (legacy flow); only its argon2id hash is kept."""
        if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
            raise invalid("password", f"must be {MIN_PASSWORD}..{MAX_PASSWORD} characters")
        password_hash = self._hasher.hash(password)
        with self._db.write() as session:
            repo = Repository(session)
            principal = visible_principal(repo, info, principal_id, "principal_id")
            if principal.kind is not PrincipalKind.SERVICE_ACCOUNT:
                raise failed_precondition("only service accounts have passwords")
            now = utcnow()
            repo.set_password_hash(principal.id, password_hash, now)
            repo.add_audit_event(audit_event(info, "principal.set_password", principal.id, principal.org_id))
        return replace(principal, has_password=True, update_time=now)
