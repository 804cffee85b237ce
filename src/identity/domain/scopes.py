"""Scope grammar and matching.

A scope is ``segment(:segment)*`` with segments ``[a-z0-9_.-]+``; ``*`` may stand only as a
whole last segment (``inventory:*``) or alone (``*``, everything). A wildcard matches exactly one
segment: it never crosses a segment boundary, so ``inventory:*`` grants ``inventory:read`` but not
``inventory:read:own``. Matching is case-sensitive.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

MAX_SCOPE_LENGTH = 128
WILDCARD = "*"
RATE_TIERS = ("standard", "premium", "enterprise")

_SEGMENT = r"[a-z0-9_.-]+"
_SCOPE = re.compile(rf"\*|{_SEGMENT}(?::{_SEGMENT})*(?::\*)?")


# Both checks are pure and hot (every Check asks them), so answers are remembered.
@lru_cache(maxsize=65_536)
def scope_error(scope: str) -> str | None:
    """Return why ``scope`` is not a valid scope, or None when it is."""
    if len(scope) > MAX_SCOPE_LENGTH:
        return f"longer than {MAX_SCOPE_LENGTH} characters"
    if not _SCOPE.fullmatch(scope):
        return "must be segment(:segment)* of [a-z0-9_.-], with * only as a whole last segment"
    if scope.startswith("rate:") and scope.removeprefix("rate:") not in RATE_TIERS:
        return "rate tier must be rate:standard, rate:premium or rate:enterprise"
    return None


@lru_cache(maxsize=65_536)
def grants(granted: str, permission: str) -> bool:
    """Whether one granted scope grants one required permission.

    A permission that itself contains ``*`` is satisfied only by the grant ``*``: a wildcard
    request must not smuggle a broad permission past a narrower grant.
    """
    if granted == WILDCARD:
        return True
    if WILDCARD in permission:
        return False
    want = permission.split(":")
    have = granted.split(":")
    if len(want) != len(have):
        return False
    return all(
        h == w or (h == WILDCARD and i == len(have) - 1)
        for i, (h, w) in enumerate(zip(have, want, strict=True))
    )


def covers(granted: str, scope: str) -> bool:
    """Whether holding ``granted`` entitles one to hand out ``scope`` (no escalation)."""
    return granted == scope or grants(granted, scope)


def missing(granted: Iterable[str], required: Iterable[str]) -> list[str]:
    """Return the required permissions that no granted scope grants, in order."""
    held = list(granted)
    return [p for p in required if not any(grants(g, p) for g in held)]


def uncovered(granted: Iterable[str], scopes: Iterable[str]) -> list[str]:
    """Return the scopes that the holder of ``granted`` may not hand out, in order."""
    held = list(granted)
    return [s for s in scopes if not any(covers(g, s) for g in held)]


def rate_tier(scopes: Iterable[str]) -> str:
    """The highest rate tier among ``rate:*`` scopes; ``standard`` when there is none."""
    tiers = [s.removeprefix("rate:") for s in scopes if s.startswith("rate:")]
    return max(tiers, key=RATE_TIERS.index, default="standard")
