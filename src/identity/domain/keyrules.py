"""Rules for creating and changing keys: expiry, publishable keys, and no escalation."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from identity.domain import scopes as scope_rules
from identity.domain.errors import IdentityError, Reason, invalid
from identity.domain.model import Caller, KeyKind, KeyPolicy, ResourceRef

PUBLISHABLE_SCOPE = "track:events"
MAX_GRACE = timedelta(days=7)
MAX_TTL_DAYS = 365


def expiry(policy: KeyPolicy, now: datetime, expire_time: datetime | None, ttl_days: int) -> datetime | None:
    """When a new key expires, from the request and the organization's policy."""
    if expire_time is not None and ttl_days:
        raise invalid("ttl_days", "give expire_time or ttl_days, not both")
    if ttl_days < 0 or ttl_days > min(policy.max_expiry_days, MAX_TTL_DAYS):
        raise invalid("ttl_days", f"must be 1..{policy.max_expiry_days} days")
    if expire_time is not None:
        lifetime = expire_time - now
        if lifetime < timedelta(days=1) or lifetime > timedelta(days=policy.max_expiry_days):
            raise invalid("expire_time", f"must be 1..{policy.max_expiry_days} days from now")
        return expire_time
    if ttl_days:
        return now + timedelta(days=ttl_days)
    if not policy.require_expiry:
        return None
    return now + timedelta(days=policy.default_expiry_days)


def check_kind_scopes(kind: KeyKind, scopes: Sequence[str], field: str = "scopes") -> None:
    """A publishable key may hold only ``track:events``: it is meant to sit in a web page."""
    if kind is KeyKind.PUBLISHABLE and list(scopes) != [PUBLISHABLE_SCOPE]:
        raise invalid(field, f"a publishable key may hold only the scope {PUBLISHABLE_SCOPE}")


def check_no_escalation(caller: Caller, scopes: Sequence[str], resources: Sequence[ResourceRef]) -> None:
    """A caller cannot hand out scopes or resources beyond its own (a platform caller excepted)."""
    if caller.platform:
        return
    beyond = scope_rules.uncovered(caller.scopes, scopes)
    if beyond:
        raise IdentityError(
            Reason.INSUFFICIENT_SCOPE, f"cannot grant scopes the caller does not hold: {' '.join(beyond)}"
        )
    if caller.resources:
        if not resources:
            raise IdentityError(
                Reason.RESOURCE_FORBIDDEN,
                "a caller limited to resources cannot grant access to every resource",
            )
        outside = [r for r in resources if not any(mine.covers(r) for mine in caller.resources)]
        if outside:
            names = " ".join(f"{r.type}/{r.id}" for r in outside)
            raise IdentityError(
                Reason.RESOURCE_FORBIDDEN, f"cannot grant resources the caller lacks: {names}"
            )


def grace_period(grace: timedelta) -> timedelta:
    """Validate a rotation grace period: 0 stops the old secret at once; at most 7 days."""
    if grace < timedelta(0) or grace > MAX_GRACE:
        raise invalid("grace_period", "must be between 0 and 7 days")
    return grace
