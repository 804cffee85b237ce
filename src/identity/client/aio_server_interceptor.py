"""A ``grpc.aio`` server interceptor that protects a service's RPCs with declared permissions.

The asyncio twin of :mod:`identity.client.server_interceptor`: same table, same refusals.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import grpc

from identity.client.identity import Identity, bound
from identity.client.permissions import AsyncAuthorizer, PermissionTable, caller_credential, client_ip
from identity.client.server_interceptor import refusal
from identity.services.errors import to_status


class AioAuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Admits each call only with a credential granting its method's declared permission."""

    def __init__(self, authorizer: AsyncAuthorizer, permissions: Mapping[str, str | None]) -> None:
        """Judge with ``authorizer``; ``permissions`` maps full method names to permissions."""
        self._authorizer = authorizer
        self._table = PermissionTable(permissions)

    async def intercept_service(self, continuation: Callable[[Any], Awaitable[Any]], details: Any) -> Any:
        """The handler of ``details.method`` wrapped so that it runs only for admitted callers."""
        handler = await continuation(details)
        if handler is None:
            return None
        method: str = details.method
        kinds = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")
        kind = next(k for k in kinds if getattr(handler, k) is not None)
        behavior = getattr(handler, kind)
        if inspect.isasyncgenfunction(behavior):
            wrapped: Any = self._streaming(method, behavior)
        else:
            wrapped = self._unary(method, behavior)
        return getattr(grpc, f"{kind}_rpc_method_handler")(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    async def _admit(self, method: str, context: grpc.aio.ServicerContext) -> Identity | None:
        """The caller's identity; aborts the call when it is refused."""
        try:
            permission = self._table.required(method)
            if permission is None:
                return None
            credential = caller_credential(context.invocation_metadata())
            return await self._authorizer.authorize(credential, permission, client_ip(context.peer()))
        except Exception as exc:
            status = to_status(refusal(exc, method))
        await context.abort(status.code, status.details, status.trailing_metadata)
        raise AssertionError("abort returns only by raising")

    def _unary(self, method: str, behavior: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
        async def serve(request: Any, context: grpc.aio.ServicerContext) -> Any:
            with bound(await self._admit(method, context)):
                result = behavior(request, context)
                return await result if inspect.isawaitable(result) else result

        return serve

    def _streaming(
        self, method: str, behavior: Callable[..., AsyncIterator[Any]]
    ) -> Callable[..., AsyncIterator[Any]]:
        async def serve(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            with bound(await self._admit(method, context)):
                async for item in behavior(request, context):
                    yield item

        return serve
