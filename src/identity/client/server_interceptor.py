"""A grpcio server interceptor that protects a service's RPCs with declared permissions.

Authorization runs on the worker thread of each call, before the handler; a refusal aborts with
UNAUTHENTICATED or PERMISSION_DENIED and one ``google.rpc.ErrorInfo`` (domain ``identity``), as
the identity service itself answers. The handler reads the caller with ``current_identity()``.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NoReturn

import grpc

from identity.client.identity import Identity, context_with
from identity.client.permissions import Authorizer, PermissionTable, caller_credential, client_ip
from identity.domain.errors import IdentityError, Reason
from identity.services.errors import to_status

log = logging.getLogger("identity.client")

Behavior = Callable[[Any, grpc.ServicerContext], Any]


def refusal(exc: Exception, method: str) -> IdentityError:
    """The IdentityError to answer with for a failure while authorizing ``method``."""
    if isinstance(exc, IdentityError):
        return exc
    log.exception("authorizing %s failed", method)
    return IdentityError(Reason.INTERNAL, "internal error while authorizing the call")


class AuthInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Admits each call only with a credential granting its method's declared permission."""

    def __init__(self, authorizer: Authorizer, permissions: Mapping[str, str | None]) -> None:
        """Judge with ``authorizer``; ``permissions`` maps full method names to permissions."""
        self._authorizer = authorizer
        self._table = PermissionTable(permissions)

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        """The handler of ``details.method`` wrapped so that it runs only for admitted callers."""
        handler = continuation(details)
        if handler is None:
            return None
        method: str = details.method
        kinds = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")
        kind = next(k for k in kinds if getattr(handler, k) is not None)
        factory = getattr(grpc, f"{kind}_rpc_method_handler")
        behavior = getattr(handler, kind)
        wrapped = (
            self._streaming(method, behavior) if kind.endswith("stream") else self._unary(method, behavior)
        )
        return factory(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _admit(self, method: str, context: grpc.ServicerContext) -> contextvars.Context:
        """A context holding the caller's identity; aborts the call when it is refused."""
        try:
            identity = self._identify(method, context)
        except Exception as exc:
            self._abort(context, refusal(exc, method))
        return context_with(identity)

    def _identify(self, method: str, context: grpc.ServicerContext) -> Identity | None:
        permission = self._table.required(method)
        if permission is None:
            return None
        credential = caller_credential(context.invocation_metadata())
        return self._authorizer.authorize(credential, permission, client_ip(context.peer()))

    @staticmethod
    def _abort(context: grpc.ServicerContext, error: IdentityError) -> NoReturn:
        context.abort_with_status(to_status(error))
        raise AssertionError("abort_with_status returns only by raising")

    def _unary(self, method: str, behavior: Behavior) -> Behavior:
        def serve(request: Any, context: grpc.ServicerContext) -> Any:
            return self._admit(method, context).run(behavior, request, context)

        return serve

    def _streaming(
        self, method: str, behavior: Behavior
    ) -> Callable[[Any, grpc.ServicerContext], Iterator[Any]]:
        def serve(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            scope = self._admit(method, context)
            responses = scope.run(behavior, request, context)
            while True:
                try:
                    item = scope.run(next, responses)
                except StopIteration:
                    return
                yield item

        return serve
