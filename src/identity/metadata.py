"""Reading call metadata: the caller credential, single values, the peer address.

Free of grpc and the database, so that ``identity.client`` can share it cheaply.
"""

from __future__ import annotations

from identity.domain.errors import IdentityError, Reason


def credential_from(metadata: tuple[tuple[str, str | bytes], ...] | None) -> str | None:
    """The caller credential: ``authorization: Bearer <x>`` or ``x-api-key: <x>``."""
    authorization = metadata_value(metadata, "authorization")
    if authorization is not None:
        scheme, _, credential = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not credential.strip():
            raise IdentityError(
                Reason.MISSING_AUTHORIZATION, "authorization metadata must be 'Bearer <credential>'"
            )
        return credential.strip()
    return metadata_value(metadata, "x-api-key") or None


def metadata_value(metadata: tuple[tuple[str, str | bytes], ...] | None, name: str) -> str | None:
    """The first text value of metadata key ``name`` (keys are lower-case in gRPC)."""
    for key, value in metadata or ():
        if key == name and isinstance(value, str):
            return value
    return None


def peer_ip(peer: str) -> str:
    """The IP address in a gRPC peer string such as ``ipv4:127.0.0.1:5000`` or ``ipv6:[::1]:5000``."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0]
    if kind == "ipv6":
        return rest.rpartition(":")[0].strip("[]")
    return ""
