"""The rules that judge a verified credential, in API.md's order of evaluation.

missing -> invalid -> expired/revoked -> inactive organization -> disabled principal -> IP ->
scope -> resource. The first two are decided while the credential is read; this module decides
the rest from plain facts.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from identity.domain import scopes as scope_rules
from identity.domain.errors import IdentityError, Reason
from identity.domain.model import (
    Key,
    KeyState,
    Organization,
    OrganizationState,
    Principal,
    PrincipalState,
    ResourceRef,
)


@dataclass(frozen=True, slots=True)
class CredentialFacts:
    """A verified key with the organization and principal it belongs to."""

    key: Key
    organization: Organization
    principal: Principal
    secret_version: int = 1


# A client address, or a function giving it: asked only when a key has an allowlist.
ClientAddress = str | None | Callable[[], str | None]


def ip_allowed(allowed_cidrs: Sequence[str], client_ip: ClientAddress) -> bool:
    """Whether ``client_ip`` lies in one of ``allowed_cidrs`` (none means any address).

    IPv4-mapped IPv6 addresses (``::ffff:10.0.0.1``) are judged as the IPv4 address they carry.
    """
    if not allowed_cidrs:
        return True
    if callable(client_ip):
        client_ip = client_ip()
    if not client_ip:
        return False
    try:
        address = ipaddress.ip_address(client_ip)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in ipaddress.ip_network(cidr) for cidr in allowed_cidrs)


def credential_denial(
    facts: CredentialFacts, now: datetime, client_ip: ClientAddress, *, check_ip: bool = True
) -> IdentityError | None:
    """Why a verified key may not be used at all right now, or None.

    ``check_ip`` is False only where no client address applies (token introspection).
    """
    state = facts.key.state(now)
    if state is KeyState.REVOKED:
        return IdentityError(Reason.REVOKED_API_KEY, "the API key was revoked")
    if state is KeyState.EXPIRED:
        return IdentityError(Reason.EXPIRED_API_KEY, "the API key has expired")
    if facts.organization.state is not OrganizationState.ACTIVE:
        return IdentityError(Reason.INACTIVE_ORGANIZATION, "the key's organization is inactive")
    if facts.principal.state is not PrincipalState.ACTIVE:
        return IdentityError(Reason.DISABLED_PRINCIPAL, "the key's principal is disabled")
    if check_ip and not ip_allowed(facts.key.allowed_cidrs, client_ip):
        return IdentityError(Reason.IP_RESTRICTED, "the client address is not allowed for this key")
    return None


def permission_denial(
    granted: Sequence[str],
    resources: Sequence[ResourceRef],
    permissions: Sequence[str],
    resource: ResourceRef | None,
) -> IdentityError | None:
    """Why granted scopes and resources do not cover the permissions on ``resource``, or None."""
    lacking = scope_rules.missing(granted, permissions)
    if lacking:
        return IdentityError(Reason.INSUFFICIENT_SCOPE, f"missing permission: {' '.join(lacking)}")
    if resource is not None and resources and not any(r.covers(resource) for r in resources):
        return IdentityError(
            Reason.RESOURCE_FORBIDDEN, f"resource {resource.type}/{resource.id} is not allowed"
        )
    return None


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to "may this credential do this to that resource?"; a denial is data, not an error."""

    allowed: bool
    reason: Reason
    message: str
    principal_id: str = ""
    org_id: str = ""
    key_id: str = ""
    granted_scopes: tuple[str, ...] = ()
    missing_permissions: tuple[str, ...] = ()
    rate_tier: str = "standard"
    credential_expire_time: datetime | None = None
