"""API key use cases: create, read, list, update, rotate, revoke, delete, expiring, changes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError

from identity.app.common import audit_event, utcnow, visible_organization
from identity.crypto import apikeys
from identity.crypto.hashing import Hasher
from identity.domain.errors import IdentityError, Reason, failed_precondition, invalid, not_found
from identity.domain.keyrules import check_kind_scopes, check_no_escalation, expiry, grace_period
from identity.domain.model import (
    Key,
    KeyEvent,
    KeyEventType,
    KeyKind,
    KeyState,
    OrganizationState,
    PrincipalState,
    RequestInfo,
    ResourceRef,
)
from identity.domain.paging import decode_time_mark, decode_token, encode_time_mark, encode_token, page
from identity.domain.validation import (
    ENVIRONMENTS,
    MAX_DESCRIPTION,
    MAX_NAME,
    MAX_REASON,
    MAX_REQUEST_ID,
    Violations,
    validate_page_size,
)
from identity.ids import new_id
from identity.store.database import Database
from identity.store.repository import Repository

IDEMPOTENCY_WINDOW = timedelta(hours=24)
MAX_EXPIRING_WINDOW = timedelta(days=366)


@dataclass(frozen=True)
class KeySpec:
    """What CreateKey asks for."""

    org_id: str
    principal_id: str
    display_name: str
    scopes: tuple[str, ...]
    description: str = ""
    kind: KeyKind | None = KeyKind.SECRET
    environment: str = "live"
    resources: tuple[ResourceRef, ...] = ()
    allowed_cidrs: tuple[str, ...] = ()
    expire_time: datetime | None = None
    ttl_days: int = 0
    require_key_id: bool = False
    request_id: str = ""


@dataclass(frozen=True)
class IssuedKey:
    """A key with its plaintext, which the caller sees this once (empty on an idempotent replay)."""

    key: Key
    api_key: str


def _check_grants(
    problems: Violations,
    prefix: str,
    scopes: Sequence[str],
    resources: Sequence[ResourceRef],
    cidrs: Sequence[str],
) -> None:
    problems.scopes(f"{prefix}scopes", scopes)
    problems.resources(f"{prefix}resources", resources)
    problems.cidrs(f"{prefix}allowed_cidrs", cidrs)


class Keys:
    """The key lifecycle."""

    def __init__(self, db: Database, hasher: Hasher) -> None:
        """Work against ``db``; hash secrets with ``hasher``."""
        self._db = db
        self._hasher = hasher

    def create(self, info: RequestInfo, spec: KeySpec) -> IssuedKey:
        """Create a key inside the principal's quota and return its plaintext once."""
        problems = Violations()
        problems.ident("principal_id", spec.principal_id)
        problems.text("display_name", spec.display_name, max_length=MAX_NAME, required=True)
        problems.text("description", spec.description, max_length=MAX_DESCRIPTION)
        problems.text("request_id", spec.request_id, max_length=MAX_REQUEST_ID)
        if spec.kind is None:
            problems.add("kind", "must be KEY_KIND_SECRET or KEY_KIND_PUBLISHABLE")
        if spec.environment not in ENVIRONMENTS:
            problems.add("environment", "must be live or test")
        _check_grants(problems, "", spec.scopes, spec.resources, spec.allowed_cidrs)
        problems.raise_if_any()
        if not info.caller.may_act_in(spec.org_id):
            raise not_found("organization", spec.org_id)
        kind = spec.kind or KeyKind.SECRET
        check_kind_scopes(kind, spec.scopes)
        check_no_escalation(info.caller, spec.scopes, spec.resources)
        new = apikeys.generate(kind, spec.environment)
        secret_hash = self._hasher.hash(new.parsed.secret)
        try:
            return self._insert(info, spec, kind, new, secret_hash)
        except IntegrityError:
            # A concurrent call with the same request id won the race: answer with its key.
            replay = self._replay(spec) if spec.request_id else None
            if replay is None:
                raise
            return replay

    def _insert(
        self, info: RequestInfo, spec: KeySpec, kind: KeyKind, new: apikeys.NewKey, secret_hash: str
    ) -> IssuedKey:
        now = utcnow()
        with self._db.write() as session:
            repo = Repository(session)
            org = visible_organization(repo, info.caller, spec.org_id)
            # Lock the principal row: concurrent creates for one principal queue here (the quota lock).
            principal = repo.get_principal(spec.principal_id, lock=True)
            if principal is None or principal.org_id != org.id:
                raise not_found("principal", spec.principal_id)
            if spec.request_id:
                earlier = repo.key_id_for_request(org.id, spec.request_id, now - IDEMPOTENCY_WINDOW)
                earlier_key = repo.get_key(earlier) if earlier else None
                if earlier_key is not None:
                    return IssuedKey(earlier_key, "")
            if org.state is not OrganizationState.ACTIVE:
                raise failed_precondition("the organization is inactive")
            if principal.state is not PrincipalState.ACTIVE:
                raise failed_precondition("the principal is disabled")
            expire_time = expiry(org.key_policy, now, spec.expire_time, spec.ttl_days)
            quota = org.key_policy.max_keys(principal.kind)
            if repo.count_active_keys(principal.id, now) >= quota:
                raise IdentityError(
                    Reason.QUOTA_EXCEEDED,
                    f"principal {principal.id} already holds its quota of {quota} active keys",
                )
            key = Key(
                id=new_id("key"),
                org_id=org.id,
                principal_id=principal.id,
                display_name=spec.display_name,
                description=spec.description,
                kind=kind,
                environment=spec.environment,
                prefix=new.parsed.prefix,
                last4=new.last4,
                scopes=spec.scopes,
                resources=spec.resources,
                allowed_cidrs=spec.allowed_cidrs,
                require_key_id=spec.require_key_id,
                create_time=now,
                update_time=now,
                expire_time=expire_time,
                created_by=info.caller.principal_id,
            )
            repo.add_key(key, new.parsed.lookup, secret_hash)
            if spec.request_id:
                repo.remember_request(org.id, spec.request_id, key.id, now)
            repo.add_key_change(KeyEventType.CREATED, key, now)
            repo.add_audit_event(
                audit_event(
                    info,
                    "key.create",
                    key.id,
                    org.id,
                    details={
                        "principal_id": principal.id,
                        "scopes": " ".join(key.scopes),
                        "kind": kind.value,
                    },
                )
            )
        return IssuedKey(key, new.plaintext)

    def _replay(self, spec: KeySpec) -> IssuedKey | None:
        with self._db.read() as session:
            repo = Repository(session)
            key_id = repo.key_id_for_request(spec.org_id, spec.request_id, utcnow() - IDEMPOTENCY_WINDOW)
            key = repo.get_key(key_id) if key_id else None
        return IssuedKey(key, "") if key else None

    def get(self, info: RequestInfo, key_id: str) -> Key:
        """One key the caller may see."""
        with self._db.read() as session:
            return self._visible(Repository(session), info, key_id, "id")

    def list_page(
        self,
        info: RequestInfo,
        org_id: str,
        principal_id: str,
        state: KeyState | None,
        page_size: int,
        page_token: str,
    ) -> tuple[list[Key], str]:
        """An organization's keys, optionally of one principal or in one state."""
        size = validate_page_size(page_size)
        if principal_id:
            problems = Violations()
            problems.ident("principal_id", principal_id)
            problems.raise_if_any()
        filters = [org_id, principal_id, state]
        after = decode_token(page_token, filters, str) or ""
        with self._db.read() as session:
            repo = Repository(session)
            visible_organization(repo, info.caller, org_id)
            keys, more = page(repo.list_keys(org_id, principal_id, state, utcnow(), after, size + 1), size)
        return keys, encode_token(keys[-1].id, filters) if more else ""

    def update(self, info: RequestInfo, key_id: str, changes: dict[str, Any]) -> Key:
        """Apply masked changes to an ACTIVE key; scopes and resources never beyond the caller's."""
        problems = Violations()
        if "display_name" in changes:
            problems.text("key.display_name", changes["display_name"], max_length=MAX_NAME, required=True)
        if "description" in changes:
            problems.text("key.description", changes["description"], max_length=MAX_DESCRIPTION)
        if "scopes" in changes:
            problems.scopes("key.scopes", changes["scopes"])
        if "resources" in changes:
            problems.resources("key.resources", changes["resources"])
        if "allowed_cidrs" in changes:
            problems.cidrs("key.allowed_cidrs", changes["allowed_cidrs"])
        problems.raise_if_any()
        now = utcnow()
        with self._db.write() as session:
            repo = Repository(session)
            key = self._active(repo, info, key_id, "key.id", now)
            updated = replace(key, **changes, update_time=now)
            check_kind_scopes(updated.kind, updated.scopes, "key.scopes")
            if "scopes" in changes or "resources" in changes:
                check_no_escalation(info.caller, updated.scopes, updated.resources)
            repo.save_key(updated)
            repo.add_key_change(KeyEventType.UPDATED, updated, now)
            repo.add_audit_event(
                audit_event(
                    info, "key.update", key.id, key.org_id, details={"fields": ",".join(sorted(changes))}
                )
            )
        return updated

    def rotate(self, info: RequestInfo, key_id: str, grace: timedelta) -> IssuedKey:
        """Give an ACTIVE key a new secret; the old one works for ``grace`` more."""
        grace = grace_period(grace)
        with self._db.read() as session:
            repo = Repository(session)
            key = self._active(repo, info, key_id, "key_id", utcnow())
            lookup = repo.lookup_of(key.id)
        new = apikeys.generate(key.kind, key.environment, lookup)
        secret_hash = self._hasher.hash(new.parsed.secret)
        now = utcnow()
        with self._db.write() as session:
            repo = Repository(session)
            key = self._active(repo, info, key_id, "key_id", now, lock=True)
            keep_until = now + grace if grace else None
            rotated = replace(key, last4=new.last4, update_time=now, previous_secret_expire_time=keep_until)
            repo.replace_secret(rotated, secret_hash, keep_until)
            repo.add_key_change(KeyEventType.ROTATED, rotated, now)
            repo.add_audit_event(
                audit_event(
                    info,
                    "key.rotate",
                    key.id,
                    key.org_id,
                    details={"grace_seconds": str(int(grace.total_seconds()))},
                )
            )
        return IssuedKey(rotated, new.plaintext)

    def revoke(self, info: RequestInfo, key_id: str, reason: str) -> Key:
        """Revoke a key, irreversibly."""
        problems = Violations()
        problems.text("reason", reason, max_length=MAX_REASON)
        problems.raise_if_any()
        now = utcnow()
        with self._db.write() as session:
            repo = Repository(session)
            key = self._visible(repo, info, key_id, "key_id", lock=True)
            if key.revoke_time is not None:
                raise failed_precondition(f"key {key.id} is already revoked")
            revoked = replace(key, revoke_time=now, revoke_reason=reason, update_time=now)
            repo.save_key(revoked)
            repo.add_key_change(KeyEventType.REVOKED, revoked, now)
            repo.add_audit_event(
                audit_event(info, "key.revoke", key.id, key.org_id, details={"reason": reason})
            )
        return revoked

    def delete(self, info: RequestInfo, key_id: str) -> Key:
        """Delete a key; it stops at once and its audit events stay."""
        now = utcnow()
        with self._db.write() as session:
            repo = Repository(session)
            key = self._visible(repo, info, key_id, "key_id", lock=True)
            repo.delete_key(key.id)
            repo.add_key_change(KeyEventType.DELETED, key, now)
            repo.add_audit_event(audit_event(info, "key.delete", key.id, key.org_id))
        return key

    def expiring(
        self, info: RequestInfo, org_id: str, within: timedelta, page_size: int, page_token: str
    ) -> tuple[list[Key], str]:
        """Active keys of an organization that expire inside ``within``, soonest first."""
        size = validate_page_size(page_size)
        if within <= timedelta(0) or within > MAX_EXPIRING_WINDOW:
            raise invalid("within", "must be positive and at most 366 days")
        filters = [org_id, within.total_seconds()]
        after = decode_time_mark(page_token, filters)
        now = utcnow()
        with self._db.read() as session:
            repo = Repository(session)
            visible_organization(repo, info.caller, org_id)
            keys, more = page(repo.expiring_keys(org_id, now, now + within, after, size + 1), size)
        token = ""
        if more and keys[-1].expire_time is not None:
            token = encode_time_mark(keys[-1].expire_time, keys[-1].id, filters)
        return keys, token

    def check_watch(self, info: RequestInfo, org_id: str, after_cursor: int) -> None:
        """Validate a WatchKeyEvents request before streaming begins."""
        if after_cursor < 0:
            raise invalid("after_cursor", "must not be negative")
        with self._db.read() as session:
            visible_organization(Repository(session), info.caller, org_id)

    def changes_after(self, org_id: str, cursor: int, limit: int = 100) -> list[KeyEvent]:
        """Key changes of an organization after ``cursor`` (visibility checked by check_watch)."""
        with self._db.read() as session:
            return Repository(session).key_changes_after(org_id, cursor, limit)

    def _visible(
        self, repo: Repository, info: RequestInfo, key_id: str, field: str, *, lock: bool = False
    ) -> Key:
        problems = Violations()
        problems.ident(field, key_id, "key")
        problems.raise_if_any()
        key = repo.get_key(key_id, lock=lock)
        if key is None or not info.caller.may_act_in(key.org_id):
            raise not_found("key", key_id)
        return key

    def _active(
        self,
        repo: Repository,
        info: RequestInfo,
        key_id: str,
        field: str,
        now: datetime,
        *,
        lock: bool = False,
    ) -> Key:
        key = self._visible(repo, info, key_id, field, lock=lock)
        state = key.state(now)
        if state is not KeyState.ACTIVE:
            raise failed_precondition(f"key {key.id} is {state.value}")
        return key
