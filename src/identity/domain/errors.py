"""Reasons and errors of the identity domain, free of any transport.

Every failure the service reports is an :class:`IdentityError` carrying one :class:`Reason`;
the gRPC layer turns the reason into a status code and a ``google.rpc.ErrorInfo``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Reason(StrEnum):
    """Reason names of API.md: DecisionReason values and ErrorInfo reasons, bare."""

    ALLOWED = "ALLOWED"
    MISSING_AUTHORIZATION = "MISSING_AUTHORIZATION"
    INVALID_API_KEY = "INVALID_API_KEY"
    REVOKED_API_KEY = "REVOKED_API_KEY"
    EXPIRED_API_KEY = "EXPIRED_API_KEY"
    INVALID_TOKEN = "INVALID_TOKEN"
    EXPIRED_TOKEN = "EXPIRED_TOKEN"
    INACTIVE_ORGANIZATION = "INACTIVE_ORGANIZATION"
    DISABLED_PRINCIPAL = "DISABLED_PRINCIPAL"
    IP_RESTRICTED = "IP_RESTRICTED"
    INSUFFICIENT_SCOPE = "INSUFFICIENT_SCOPE"
    RESOURCE_FORBIDDEN = "RESOURCE_FORBIDDEN"
    QUOTA_EXCEEDED = "QUOTA_EXCEEDED"
    RATE_LIMITED = "RATE_LIMITED"
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    UNAVAILABLE = "UNAVAILABLE"
    UNIMPLEMENTED = "UNIMPLEMENTED"
    INTERNAL = "INTERNAL"
    REQUEST_TOO_LARGE = "REQUEST_TOO_LARGE"


# The status each reason travels with as an RPC error (names of grpc.StatusCode members).
STATUS_OF_REASON: dict[Reason, str] = {
    Reason.MISSING_AUTHORIZATION: "UNAUTHENTICATED",
    Reason.INVALID_API_KEY: "UNAUTHENTICATED",
    Reason.REVOKED_API_KEY: "UNAUTHENTICATED",
    Reason.EXPIRED_API_KEY: "UNAUTHENTICATED",
    Reason.INVALID_TOKEN: "UNAUTHENTICATED",
    Reason.EXPIRED_TOKEN: "UNAUTHENTICATED",
    Reason.INACTIVE_ORGANIZATION: "PERMISSION_DENIED",
    Reason.DISABLED_PRINCIPAL: "PERMISSION_DENIED",
    Reason.IP_RESTRICTED: "PERMISSION_DENIED",
    Reason.INSUFFICIENT_SCOPE: "PERMISSION_DENIED",
    Reason.RESOURCE_FORBIDDEN: "PERMISSION_DENIED",
    Reason.QUOTA_EXCEEDED: "RESOURCE_EXHAUSTED",
    Reason.RATE_LIMITED: "RESOURCE_EXHAUSTED",
    Reason.INVALID_ARGUMENT: "INVALID_ARGUMENT",
    Reason.NOT_FOUND: "NOT_FOUND",
    Reason.ALREADY_EXISTS: "ALREADY_EXISTS",
    Reason.FAILED_PRECONDITION: "FAILED_PRECONDITION",
    Reason.UNAVAILABLE: "UNAVAILABLE",
    Reason.UNIMPLEMENTED: "UNIMPLEMENTED",
    Reason.INTERNAL: "INTERNAL",
    Reason.REQUEST_TOO_LARGE: "RESOURCE_EXHAUSTED",
}


@dataclass(frozen=True)
class FieldViolation:
    """One bad request field: its path (``key.scopes[2]``) and what is wrong with it."""

    field: str
    description: str


class IdentityError(Exception):
    """A failure with a reason from API.md and a message fit for any caller (never a secret)."""

    def __init__(self, reason: Reason, message: str, violations: tuple[FieldViolation, ...] = ()) -> None:
        """Build an error; ``violations`` name bad fields for INVALID_ARGUMENT."""
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.violations = violations

    @property
    def status(self) -> str:
        """The gRPC status code name this error travels with."""
        return STATUS_OF_REASON[self.reason]


def invalid(field: str, description: str) -> IdentityError:
    """An INVALID_ARGUMENT error about one field."""
    return invalid_fields([FieldViolation(field, description)])


def invalid_fields(violations: list[FieldViolation]) -> IdentityError:
    """An INVALID_ARGUMENT error naming every bad field."""
    fields = ", ".join(v.field for v in violations)
    detail = "; ".join(f"{v.field}: {v.description}" for v in violations)
    return IdentityError(Reason.INVALID_ARGUMENT, f"invalid {fields}: {detail}", tuple(violations))


def not_found(kind: str, ident: str) -> IdentityError:
    """A NOT_FOUND error; used also for resources of another organization, to reveal nothing."""
    return IdentityError(Reason.NOT_FOUND, f"{kind} {ident!r} not found")


def failed_precondition(message: str) -> IdentityError:
    """A FAILED_PRECONDITION error."""
    return IdentityError(Reason.FAILED_PRECONDITION, message)


def unavailable(message: str = "the database is unavailable; nothing was changed") -> IdentityError:
    """An UNAVAILABLE error: the service cannot decide, so it refuses."""
    return IdentityError(Reason.UNAVAILABLE, message)
