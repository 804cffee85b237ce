"""The one door every identity.v1 RPC passes.

Caller authentication by the rule table, error mapping to status + ErrorInfo, audit of refused
admin actions, and per RPC a count, a latency and one log line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from typing import Any, NoReturn, Protocol

import grpc
from google.protobuf.message import DecodeError, Message

from identity.authz import Authenticator, require_scope
from identity.domain.errors import STATUS_OF_REASON, IdentityError, Reason
from identity.domain.model import AuditOutcome, Origin, RequestInfo
from identity.domain.validation import is_id
from identity.metadata import credential_from, metadata_value, peer_ip
from identity.metrics.rpcs import RpcTally
from identity.services.errors import to_status
from identity.services.limits import check_sizes
from identity.services.rules import RULES, Rule

log = logging.getLogger("identity.rpc")

_REQUEST: ContextVar[RequestInfo] = ContextVar("identity_request")
IDENTITY_PREFIX = "/identity.v1."
_TARGET_FIELDS = ("key_id", "id", "principal_id", "org_id")

AuditFailure = Callable[[RequestInfo, str, str, str, AuditOutcome, str], None]


class Shortcut(Protocol):
    """Answers a method's requests from their bytes alone, when it remembers them (see ``services.answers``)."""

    def recall(self, request: bytes, *, count_miss: bool = True) -> bytes | None:
        """The encoded response to send for ``request``, or None to serve it in full (see ``count_miss``)."""

    def learn(self, request: bytes, decoded: Any) -> None:
        """Called after ``request`` (decoded as ``decoded``) was served in full, successfully."""


def current_request() -> RequestInfo:
    """The authenticated request being served (set by the interceptor for authenticated RPCs)."""
    return _REQUEST.get()


def origin_of(context: grpc.ServicerContext) -> Origin:
    """Where a call came from: the gRPC peer (never metadata) and its user agent, read on first use."""
    origin = Origin(
        peer=context.peer,
        client_ip=lambda: peer_ip(origin.peer),
        user_agent=lambda: metadata_value(context.invocation_metadata(), "user-agent") or "",
    )
    return origin


def _target(request: Message) -> str:
    # What the request acts on; audit_event keeps it only if it is a well-formed id.
    for name in _TARGET_FIELDS:
        value = getattr(request, name, None)
        if isinstance(value, str) and value:
            return value
    for field, value in request.ListFields():
        if field.message_type is not None and hasattr(value, "id"):
            return str(value.id)
    return ""


class IdentityInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Wraps each identity.v1 handler with authentication, error mapping, audit and logging."""

    def __init__(
        self,
        authenticator: Authenticator,
        audit_failure: AuditFailure,
        rpcs: RpcTally | None = None,
        shortcuts: Mapping[str, Shortcut] | None = None,
    ) -> None:
        """Authenticate with ``authenticator``; record refused admin actions with ``audit_failure``.

        Count every call in ``rpcs`` when given. A method in ``shortcuts`` gets its request
        undecoded, and its shortcut's remembered answer when it has one.
        """
        self._authenticator = authenticator
        self._audit_failure = audit_failure
        self._rpcs = rpcs
        self._shortcuts = shortcuts or {}
        # grpcio asks for the handler on every call: wrap each method's handler once, not per call.
        self._wrapped: dict[str, tuple[Any, Any]] = {}

    def intercept_service(self, continuation: Any, details: Any) -> Any:
        """Return the wrapped handler for an identity.v1 method; other services pass through."""
        handler = continuation(details)
        method: str = details.method
        if handler is None or not (method.startswith(IDENTITY_PREFIX) or method in RULES):
            return handler
        original, wrapped = self._wrapped.get(method, (None, None))
        if original is not handler:
            wrapped = self._wrap(method, handler)
            self._wrapped[method] = (handler, wrapped)
        return wrapped

    def remembered(self, method: str) -> Callable[[bytes], bytes | None] | None:
        """For a method with a shortcut: its remembered answer to a request's bytes, or None.

        A hit is counted and logged as a served call, a miss not at all: the caller then serves
        the call in full through the wrapped handler. The event loop's door asks this first, as
        a hit needs nothing else (no context, no guard against waiting). While calls are logged
        it always misses: a log line names the call's peer, which only the full path has.
        """
        shortcut = self._shortcuts.get(method)
        if shortcut is None:
            return None

        def answer(request: bytes) -> bytes | None:
            if log.isEnabledFor(logging.INFO):
                return None
            started = time.perf_counter()
            remembered = shortcut.recall(request, count_miss=False)
            if remembered is not None:
                self._count(method, "OK", started)
            return remembered

        return answer

    def _wrap(self, method: str, handler: Any) -> Any:
        rule = RULES.get(method)
        shortcut = self._shortcuts.get(method)
        if shortcut is not None and handler.unary_unary is not None:
            # No (de)serializers: the shortcut works on bytes, and decodes only what it must serve in full.
            return grpc.unary_unary_rpc_method_handler(self._remembering(method, rule, shortcut, handler))
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, rule, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(method, rule, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    def _unary(self, method: str, rule: Rule | None, behavior: Any) -> Any:
        sized = method.startswith(IDENTITY_PREFIX)

        def serve(request: Message, context: grpc.ServicerContext) -> Any:
            started = time.perf_counter()
            info: RequestInfo | None = None
            try:
                info = self._authenticate(rule, context)  # set before the checks: refusals are audited
                self._admit(rule, info, request, sized)
                token = _REQUEST.set(info) if info else None
                try:
                    response = behavior(request, context)
                finally:
                    if token is not None:
                        _REQUEST.reset(token)
            except Exception as exc:
                self._fail(method, rule, info, request, context, exc, started)
            self._finish(method, "OK", "", info, context, started)
            return response

        return serve

    def _remembering(self, method: str, rule: Rule | None, shortcut: Shortcut, handler: Any) -> Any:
        serve_in_full = self._unary(method, rule, handler.unary_unary)
        decode, encode = handler.request_deserializer, handler.response_serializer

        def serve(request: bytes, context: grpc.ServicerContext) -> bytes:
            started = time.perf_counter()
            # A remembered answer was learnt from these same bytes after they passed every check here.
            answer = shortcut.recall(request)
            if answer is not None:
                self._finish(method, "OK", "", None, context, started)
                return answer
            try:
                decoded = decode(request)
            except DecodeError:
                problem = IdentityError(Reason.INVALID_ARGUMENT, "the request is not a valid encoded message")
                self._fail(method, rule, None, None, context, problem, started)
            response = serve_in_full(decoded, context)
            shortcut.learn(request, decoded)
            return bytes(encode(response))

        return serve

    def _stream(self, method: str, rule: Rule | None, behavior: Any) -> Any:
        sized = method.startswith(IDENTITY_PREFIX)

        def serve(request: Message, context: grpc.ServicerContext) -> Iterator[Any]:
            started = time.perf_counter()
            info: RequestInfo | None = None
            try:
                info = self._authenticate(rule, context)  # set before the checks: refusals are audited
                self._admit(rule, info, request, sized)
                token = _REQUEST.set(info) if info else None
                try:
                    yield from behavior(request, context)
                finally:
                    if token is not None:
                        _REQUEST.reset(token)
            except Exception as exc:
                self._fail(method, rule, info, request, context, exc, started)
            self._finish(method, "OK", "", info, context, started)

        return serve

    @staticmethod
    def _admit(rule: Rule | None, info: RequestInfo | None, request: Message, sized: bool) -> None:
        """Require the rule's scope of the authenticated caller, then bound the request's sizes.

        Sizes are judged after the caller, as every other bad input is; Envoy's own messages
        (``sized`` false) carry HTTP headers, which are Envoy's to bound.
        """
        if info is not None and rule is not None and rule.scope is not None:
            require_scope(info.caller, rule.scope)
        if sized:
            check_sizes(request)

    def _authenticate(self, rule: Rule | None, context: grpc.ServicerContext) -> RequestInfo | None:
        if rule is None:
            raise IdentityError(Reason.INTERNAL, "this RPC has no declared auth requirement")
        if not rule.authenticated:
            return None
        peer = context.peer()
        metadata = context.invocation_metadata()
        client_ip = peer_ip(peer)
        caller = self._authenticator.authenticate(
            credential_from(metadata), client_ip, Origin(peer, client_ip)
        )
        user_agent = metadata_value(metadata, "user-agent") or ""
        return RequestInfo(caller, peer=peer, user_agent=user_agent)

    def _fail(
        self,
        method: str,
        rule: Rule | None,
        info: RequestInfo | None,
        request: Message | None,
        context: grpc.ServicerContext,
        exc: Exception,
        started: float,
    ) -> NoReturn:
        if isinstance(exc, IdentityError):
            error = exc
        elif isinstance(exc, NotImplementedError):
            error = IdentityError(Reason.UNIMPLEMENTED, f"{method} is not served by this version")
        else:
            log.exception("unexpected failure in %s", method)
            error = IdentityError(Reason.INTERNAL, "internal error")
        if info is not None and rule is not None and request is not None:
            self._record(rule, info, request, error)
        self._finish(method, error.status, error.reason.value, info, context, started)
        context.abort_with_status(to_status(error))
        raise AssertionError("abort_with_status returns only by raising")

    def _record(self, rule: Rule, info: RequestInfo, request: Message, error: IdentityError) -> None:
        # The database just failed this call: a second write there would most likely fail too, after
        # making the caller wait again (a locked-out SQLite holds each statement for seconds).
        if rule.action is None or error.reason is Reason.UNAVAILABLE:
            return
        # File the refusal under the organization acted in, so its own auditors see it; a request
        # naming no organization, or not a well-formed id, is filed under the caller's own.
        org_id = getattr(request, "org_id", "")
        if not isinstance(org_id, str) or not is_id(org_id) or not info.caller.may_act_in(org_id):
            org_id = info.caller.org_id
        denied = STATUS_OF_REASON[error.reason] == "PERMISSION_DENIED"
        outcome = AuditOutcome.DENIED if denied else AuditOutcome.FAILURE
        try:
            self._audit_failure(info, rule.action, _target(request), org_id, outcome, error.reason.value)
        except IdentityError:
            log.warning("could not audit a refused %s: the database is unavailable", rule.action)

    def _finish(
        self,
        method: str,
        code: str,
        reason: str,
        info: RequestInfo | None,
        context: grpc.ServicerContext,
        started: float,
    ) -> None:
        seconds = self._count(method, code, started)
        if not log.isEnabledFor(logging.INFO):
            return  # before context.peer(), which costs more than the rest of a warm check
        caller = info.caller if info else None
        fields = {
            "method": method,
            "code": code,
            "reason": reason,
            "duration_ms": round(seconds * 1000, 3),
            "peer": info.peer if info else context.peer(),
            "principal_id": caller.principal_id if caller else "",
            "key_id": caller.key_id if caller else "",
        }
        log.info("rpc", extra={"fields": fields})

    def _count(self, method: str, code: str, started: float) -> float:
        """Count a call that ended now, begun at ``started`` (``time.perf_counter()``); its seconds."""
        seconds = time.perf_counter() - started
        if self._rpcs is not None:
            self._rpcs.record(method, code, seconds)
        return seconds
