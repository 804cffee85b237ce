"""A grpcio channel that sends ``authorization: Bearer <token>`` on every call."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import grpc

from identity.client.token_cache import TokenSource

Metadata = Sequence[tuple[str, str | bytes]]


class _CallDetails(NamedTuple):
    method: str
    timeout: float | None
    metadata: Metadata | None
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: grpc.Compression | None


class _Details(_CallDetails, grpc.ClientCallDetails):  # type: ignore[misc]
    """ClientCallDetails with the caller's fields and our metadata."""


def with_bearer(metadata: Metadata | None, token: str) -> list[tuple[str, str | bytes]]:
    """``metadata`` with any ``authorization`` entry replaced by ``Bearer <token>``."""
    kept = [(k, v) for k, v in metadata or () if k != "authorization"]
    return [*kept, ("authorization", f"Bearer {token}")]


class BearerInterceptor(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[misc]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[misc]
    grpc.StreamUnaryClientInterceptor,  # type: ignore[misc]
    grpc.StreamStreamClientInterceptor,  # type: ignore[misc]
):
    """Adds the current access token of a :class:`TokenSource` to every call."""

    def __init__(self, tokens: TokenSource) -> None:
        """Take tokens from ``tokens``."""
        self._tokens = tokens

    def _details(self, details: Any) -> _Details:
        return _Details(
            details.method,
            details.timeout,
            with_bearer(details.metadata, self._tokens.token()),
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        """Send a unary call with the token."""
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        """Send a server-streaming call with the token."""
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Callable[..., Any], details: Any, requests: Any) -> Any:
        """Send a client-streaming call with the token."""
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation: Callable[..., Any], details: Any, requests: Any) -> Any:
        """Send a bidirectional call with the token."""
        return continuation(self._details(details), requests)


def bearer_channel(channel: grpc.Channel, tokens: TokenSource) -> grpc.Channel:
    """``channel`` wrapped so that every call carries a token from ``tokens``."""
    return grpc.intercept_channel(channel, BearerInterceptor(tokens))
