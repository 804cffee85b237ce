"""Serving the identity handlers on grpcio's asyncio server: warm calls on the loop, the rest on threads.

The handlers are synchronous, as :class:`IdentityInterceptor` wraps them. Run on a request thread
each, a call pays grpcio's thread hand-offs, which cost a warm Check more than all of identity's
own work. So the hot methods are tried on the event loop first: a warm credential touches neither
the database nor argon2, and runs there to the end. A cold one reaches a place that would wait,
which raises :class:`~identity.blocking.WouldBlock` before anything observable happened (see
:mod:`identity.blocking`); the call then runs again, in full, on a request thread. Every other
method runs on a request thread from the start.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator, Callable, Collection
from concurrent.futures import Executor
from typing import Any, NoReturn

import grpc

from identity.blocking import WouldBlock, attempt

Lookup = Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None]
# A method's remembered answer to a request's bytes, or None (see IdentityInterceptor.remembered).
Remembered = Callable[[str], Callable[[bytes], bytes | None] | None]
_END = object()  # what next() returns once a response stream is over


class Refusal(Exception):
    """Raised where the synchronous API's ``abort`` would end the call; the door sends ``status``."""

    def __init__(self, status: grpc.Status) -> None:
        """The call ends with ``status`` (code, details, trailing metadata)."""
        super().__init__(status.code)
        self.status = status


class _Status(grpc.Status):  # type: ignore[misc]
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self.code, self.details, self.trailing_metadata = code, details, ()


class CallContext:
    """The parts of grpcio's synchronous ``ServicerContext`` the handlers use, over an asyncio call.

    grpcio's call may be read on the event loop's thread only: read from a request thread while
    the loop finishes it (its client gone), it crashed the process (a segmentation fault in
    ``grpc_call_get_peer``). So on the loop the peer and metadata are read on first use (a warm
    Check needs neither), and :meth:`detach` reads them there before the call goes to a request
    thread, which then sees only those copies. The call is ended only by raising :class:`Refusal`.
    """

    __slots__ = ("_call", "_metadata", "_over", "_peer")

    def __init__(self, call: grpc.aio.ServicerContext) -> None:
        """Stand for ``call``."""
        self._call = call
        self._over = False
        self._peer: str | None = None
        self._metadata: Any = None

    def peer(self) -> str:
        """The caller's address, as grpcio names it (``ipv4:127.0.0.1:5000``)."""
        if self._peer is None:
            self._peer = str(self._call.peer())
        return self._peer

    def invocation_metadata(self) -> Any:
        """The call's metadata: (key, value) pairs."""
        if self._metadata is None:
            self._metadata = self._call.invocation_metadata()
        return self._metadata

    def detach(self) -> None:
        """Read, on the loop's thread, all a request thread may ask of the call: it must not read the call."""
        self.peer()
        self.invocation_metadata()

    def is_active(self) -> bool:
        """Whether the call goes on: false once it ended, the client having left or the server stopped it."""
        return not self._over

    def end(self) -> None:
        """Note that the call is over. grpcio's asyncio context does not say so: it cancels the serving task."""
        self._over = True

    def abort(self, code: grpc.StatusCode, details: str) -> NoReturn:
        """End the call with ``code`` and ``details``."""
        raise Refusal(_Status(code, details))

    def abort_with_status(self, status: grpc.Status) -> NoReturn:
        """End the call with ``status``."""
        raise Refusal(status)


class LoopDoor(grpc.GenericRpcHandler):  # type: ignore[misc]
    """Serves synchronous handlers on an asyncio server: ``hot`` methods on the loop while they can.

    ``lookup`` finds the (wrapped) synchronous handler of a method; blocking work goes to ``executor``.
    A hot method with a remembered answer to the request's bytes (``remembered``) gets it before
    anything else is set up for the call.
    """

    def __init__(
        self, lookup: Lookup, executor: Executor, hot: Collection[str], remembered: Remembered | None = None
    ) -> None:
        """Serve what ``lookup`` finds; run on ``executor`` what may not run on the loop."""
        self._lookup = lookup
        self._executor = executor
        self._hot = frozenset(hot)
        self._remembered = remembered
        self._handlers: dict[str, grpc.RpcMethodHandler | None] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        """The asyncio handler of the called method, or None when it is not served here."""
        method: str = handler_call_details.method
        if method not in self._handlers:  # handlers depend on the method alone: adapt each once
            self._handlers[method] = self._adapt(method, self._lookup(handler_call_details))
        return self._handlers[method]

    def _adapt(self, method: str, handler: grpc.RpcMethodHandler | None) -> grpc.RpcMethodHandler | None:
        if handler is None:
            return None
        codecs = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            on_loop = method in self._hot
            recall = self._remembered(method) if on_loop and self._remembered else None
            serve = self._unary(handler.unary_unary, on_loop, recall)
            return grpc.unary_unary_rpc_method_handler(serve, **codecs)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(self._stream(handler.unary_stream), **codecs)
        raise TypeError(f"{method}: only unary requests are served")

    def _unary(
        self,
        behavior: Callable[[Any, CallContext], Any],
        on_loop: bool,
        recall: Callable[[bytes], bytes | None] | None,
    ) -> Any:
        executor = self._executor

        async def serve(request: Any, call: grpc.aio.ServicerContext) -> Any:
            if recall is not None and (answer := recall(request)) is not None:
                return answer
            context = CallContext(call)
            try:
                if on_loop:
                    try:
                        return attempt(behavior, request, context)
                    except WouldBlock:
                        pass  # cold: nothing happened yet, so the call runs again where it may wait
                context.detach()
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(executor, behavior, request, context)
            except Refusal as refusal:
                status = refusal.status
            # Aborted outside the except block: grpcio keeps its abort exception on the call, and
            # raised in there it would chain the refusal's traceback, every frame of the handler
            # with it, into a reference cycle left for the garbage collector (a flood is refusals).
            await _abort(call, status)

        return serve

    def _stream(self, behavior: Callable[[Any, CallContext], Any]) -> Any:
        executor = self._executor

        async def serve(request: Any, call: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            context = CallContext(call)
            context.detach()
            responses = behavior(request, context)  # a generator: nothing runs yet
            # Every step runs on a request thread, all in one context: the handler's context
            # variables are set in one step and reset in another.
            steps = contextvars.copy_context()

            def advance() -> Any:
                return steps.run(next, responses, _END)

            step = executor.submit(advance)
            try:
                while (response := await asyncio.wrap_future(step)) is not _END:
                    yield response
                    step = executor.submit(advance)
            except Refusal as refusal:
                await _abort(call, refusal.status)
            finally:
                # A stream the client left is closed once its step in flight is done (a handler
                # sees is_active() turn false at its next wait), never from two threads at once.
                context.end()
                step.add_done_callback(lambda _: steps.run(responses.close))

        return serve


async def _abort(call: grpc.aio.ServicerContext, status: grpc.Status) -> NoReturn:
    await call.abort(status.code, status.details, status.trailing_metadata)
    raise AssertionError("abort returns only by raising")
