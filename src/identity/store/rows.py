"""Domain objects from database rows: keys, their secret hashes, organizations, principals, changes.

A row is read by attribute, as an ORM object gives it; :mod:`identity.store.lookups` passes a
view of a Core row with the same attributes.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from identity.crypto.apikeys import display_prefix
from identity.domain.model import (
    Change,
    ChangeSubject,
    Key,
    KeyEventType,
    KeyKind,
    KeyPolicy,
    Organization,
    OrganizationState,
    Principal,
    PrincipalKind,
    PrincipalState,
    ResourceRef,
)
from identity.store.models import ApiKeyRow, OrganizationRow, PrincipalRow

# The change log's types that are key events; the others name a ChangeSubject.
KEY_EVENT_TYPES = tuple(t.value for t in KeyEventType)


@dataclass(frozen=True, slots=True)
class KeySecrets:
    """The hashes a presented secret may match: current, and previous during a rotation grace.

    ``version`` counts rotations; tokens carry the version of the secret that minted them.
    """

    secret_hash: str
    previous_secret_hash: str | None
    previous_secret_expire_time: datetime | None
    version: int = 1


def secrets_of(row: ApiKeyRow) -> KeySecrets:
    """The secret hashes of a key's row."""
    return KeySecrets(
        row.secret_hash, row.previous_secret_hash, row.previous_secret_expire_time, row.secret_version
    )


def organization_of(row: OrganizationRow) -> Organization:
    """The organization of its row."""
    return Organization(
        id=row.id,
        display_name=row.display_name,
        state=OrganizationState(row.state),
        key_policy=KeyPolicy(
            max_keys_per_user=row.max_keys_per_user,
            max_keys_per_service_account=row.max_keys_per_service_account,
            max_expiry_days=row.max_expiry_days,
            default_expiry_days=row.default_expiry_days,
            require_expiry=row.require_expiry,
        ),
        create_time=row.create_time,
        update_time=row.update_time,
        is_platform=row.is_platform,
    )


def principal_of(row: PrincipalRow) -> Principal:
    """The principal of its row."""
    return Principal(
        id=row.id,
        org_id=row.org_id,
        kind=PrincipalKind(row.kind),
        display_name=row.display_name,
        state=PrincipalState(row.state),
        create_time=row.create_time,
        update_time=row.update_time,
        has_password=row.password_hash is not None,
    )


def key_of(row: ApiKeyRow) -> Key:
    """The key of its row (without its secrets)."""
    # Ids that many keys share are interned: a replica may cache a key state per key.
    return Key(
        id=row.id,
        org_id=sys.intern(row.org_id),
        principal_id=sys.intern(row.principal_id),
        display_name=row.display_name,
        description=row.description,
        kind=KeyKind(row.kind),
        environment=sys.intern(row.environment),
        prefix=display_prefix(KeyKind(row.kind), row.environment, row.lookup),
        last4=row.last4,
        scopes=tuple(row.scopes),
        resources=tuple(ResourceRef(t, i) for t, i in row.resources),
        allowed_cidrs=tuple(row.allowed_cidrs),
        require_key_id=row.require_key_id,
        create_time=row.create_time,
        update_time=row.update_time,
        expire_time=row.expire_time,
        created_by=sys.intern(row.created_by),
        revoke_time=row.revoke_time,
        revoke_reason=row.revoke_reason,
        last_used_time=row.last_used_time,
        previous_secret_expire_time=row.previous_secret_expire_time,
    )


def change_of(cursor: int, change_type: str, key_id: str, snapshot: dict[str, Any]) -> Change:
    """A change log row as caches see it: what changed, and until when a revoked token matters."""
    if change_type in KEY_EVENT_TYPES:
        return Change(cursor, ChangeSubject.KEY, key_id)
    subject = ChangeSubject(change_type)
    expires = snapshot.get("expire_time")
    return Change(cursor, subject, snapshot["id"], datetime.fromisoformat(expires) if expires else None)
