"""A ``grpc.aio`` channel that sends ``authorization: Bearer <token>`` on every call.

``grpc.aio`` files each interceptor object under one call kind only, so there is one small
interceptor per kind; :func:`aio_bearer_interceptors` returns all four.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from identity.client.channel import with_bearer
from identity.client.token_cache import AsyncTokenSource


class _AioBearer:
    """Adds the current access token of an :class:`AsyncTokenSource` to a call."""

    def __init__(self, tokens: AsyncTokenSource) -> None:
        self._tokens = tokens

    async def _details(self, details: Any) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*with_bearer(tuple(details.metadata or ()), await self._tokens.token()))
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )


class AioUnaryUnaryBearer(_AioBearer, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Unary calls carry the token."""

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        """Send a unary call with the token."""
        return await continuation(await self._details(details), request)


class AioUnaryStreamBearer(_AioBearer, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    """Server-streaming calls carry the token."""

    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        """Send a server-streaming call with the token."""
        return await continuation(await self._details(details), request)


class AioStreamUnaryBearer(_AioBearer, grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[misc]
    """Client-streaming calls carry the token."""

    async def intercept_stream_unary(
        self, continuation: Callable[..., Any], details: Any, requests: Any
    ) -> Any:
        """Send a client-streaming call with the token."""
        return await continuation(await self._details(details), requests)


class AioStreamStreamBearer(_AioBearer, grpc.aio.StreamStreamClientInterceptor):  # type: ignore[misc]
    """Bidirectional calls carry the token."""

    async def intercept_stream_stream(
        self, continuation: Callable[..., Any], details: Any, requests: Any
    ) -> Any:
        """Send a bidirectional call with the token."""
        return await continuation(await self._details(details), requests)


def aio_bearer_interceptors(tokens: AsyncTokenSource) -> list[grpc.aio.ClientInterceptor]:
    """Interceptors for ``grpc.aio.*_channel(..., interceptors=...)`` adding tokens of ``tokens``."""
    kinds = (AioUnaryUnaryBearer, AioUnaryStreamBearer, AioStreamUnaryBearer, AioStreamStreamBearer)
    return [kind(tokens) for kind in kinds]


def aio_bearer_channel(
    target: str, tokens: AsyncTokenSource, credentials: grpc.ChannelCredentials | None = None
) -> grpc.aio.Channel:
    """A ``grpc.aio`` channel to ``target`` whose every call carries a token from ``tokens``."""
    interceptors = aio_bearer_interceptors(tokens)
    if credentials is None:
        return grpc.aio.insecure_channel(target, interceptors=interceptors)
    return grpc.aio.secure_channel(target, credentials, interceptors=interceptors)
