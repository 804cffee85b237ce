"""The verified caller of a protected RPC, readable by the handler that serves it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import Context, ContextVar, copy_context
from dataclasses import dataclass
from datetime import datetime

_CURRENT: ContextVar[Identity | None] = ContextVar("identity_client_caller", default=None)


@dataclass(frozen=True)
class Identity:
    """Who a verified credential speaks for, and what it may do.

    ``token_id`` is the JWT ``jti`` when the token was verified offline, empty when the decision
    came from ``AuthorizationService.Check``.
    """

    principal_id: str
    org_id: str
    key_id: str
    scopes: tuple[str, ...]
    rate_tier: str = "standard"
    expire_time: datetime | None = None
    token_id: str = ""


def current_identity() -> Identity:
    """The caller of the RPC being served; raises LookupError outside a protected call."""
    identity = _CURRENT.get()
    if identity is None:
        raise LookupError("no verified identity: this code does not run inside a protected RPC")
    return identity


def optional_identity() -> Identity | None:
    """The caller of the RPC being served, or None (outside a protected call, or a public method)."""
    return _CURRENT.get()


@contextmanager
def bound(identity: Identity | None) -> Iterator[None]:
    """Make ``identity`` the current one for the duration of the block."""
    token = _CURRENT.set(identity)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def context_with(identity: Identity | None) -> Context:
    """A copy of the current context in which ``identity`` is the current one."""
    context = copy_context()
    context.run(_CURRENT.set, identity)
    return context
