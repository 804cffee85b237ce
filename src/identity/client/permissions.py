"""Which permission each RPC of a protected service needs, and who the caller claims to be.

The table is the one place a downstream service declares its auth: full method name
(``/package.Service/Method``) to the permission a caller must hold, or :data:`PUBLIC` for a
method anyone may call. A method missing from the table is refused (fail closed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from identity.client.identity import Identity
from identity.domain.errors import IdentityError, Reason
from identity.domain.scopes import scope_error
from identity.metadata import credential_from, peer_ip

PUBLIC: None = None

Metadata = Sequence[tuple[str, str | bytes]]


class Authorizer(Protocol):
    """Judges a credential for one permission (``OfflineAuthorizer``, ``CheckAuthorizer``)."""

    def authorize(self, credential: str, permission: str, client_ip: str) -> Identity:
        """The caller's identity, or an IdentityError saying why the call is refused."""
        ...


class AsyncAuthorizer(Protocol):
    """The asyncio form of :class:`Authorizer` (``AioOfflineAuthorizer``, ``AioCheckAuthorizer``)."""

    async def authorize(self, credential: str, permission: str, client_ip: str) -> Identity:
        """The caller's identity, or an IdentityError saying why the call is refused."""
        ...


class PermissionTable:
    """The declared permission of every protected method; checked when it is built."""

    def __init__(self, permissions: Mapping[str, str | None]) -> None:
        """Validate ``permissions`` (method -> permission or PUBLIC); raise ValueError on a bad entry."""
        for method, permission in permissions.items():
            service, _, name = method.removeprefix("/").partition("/")
            if not method.startswith("/") or not service or not name or "/" in name:
                raise ValueError(f"{method!r} is not a full method name like '/package.Service/Method'")
            if permission is not None and (problem := scope_error(permission)):
                raise ValueError(f"permission {permission!r} of {method}: {problem}")
        self._permissions = dict(permissions)

    def required(self, method: str) -> str | None:
        """The permission ``method`` needs (None: public); refuses a method that declares none."""
        if method not in self._permissions:
            raise IdentityError(Reason.INTERNAL, f"{method} declares no permission; refused")
        return self._permissions[method]


def caller_credential(metadata: Metadata | None) -> str:
    """The credential of ``authorization: Bearer`` or ``x-api-key``; MISSING_AUTHORIZATION without one."""
    credential = credential_from(tuple(metadata or ()))
    if not credential:
        raise IdentityError(Reason.MISSING_AUTHORIZATION, "this call needs a credential")
    return credential


def client_ip(peer: str) -> str:
    """The caller's IP address from the gRPC peer (never from metadata)."""
    return peer_ip(peer)
