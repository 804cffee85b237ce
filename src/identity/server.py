"""build_server(settings) -> (server, port): the identity.v1 services, health and reflection."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine
from concurrent import futures
from typing import Any, TypeVar

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from identity.app.audit import AuditLog
from identity.app.background import BackgroundWriter
from identity.app.keys import Keys
from identity.app.organizations import Organizations
from identity.app.principals import Principals
from identity.app.tokens import TokenExchange
from identity.authz import Authenticator
from identity.blocking import forbid_blocking
from identity.cache.allows import AllowMemo
from identity.cache.states import KeyStateCache
from identity.cache.verified import VerifiedCredentials
from identity.changefeed import ChangeFeed
from identity.checks import DecisionEngine
from identity.config import Settings
from identity.credentials import CredentialStore
from identity.crypto.hashing import SecretHasher
from identity.crypto.pool import BoundedHasher
from identity.crypto.signing import load_kek
from identity.domain.decisions import Decision
from identity.keyring import Keyring
from identity.metrics.rpcs import RpcTally
from identity.metrics.snapshot import Telemetry
from identity.services.answers import METHOD as answers_method
from identity.services.answers import CheckAnswers
from identity.services.audit import AuditServicer
from identity.services.authorization import AuthorizationServicer
from identity.services.envoy import EnvoyAuthorizationServicer
from identity.services.interceptor import IdentityInterceptor
from identity.services.keys import KeyServicer
from identity.services.loop import LoopDoor
from identity.services.organizations import OrganizationServicer
from identity.services.principals import PrincipalServicer
from identity.services.rules import HOT_METHODS
from identity.services.tokens import TokenServicer
from identity.store.database import Database
from identity.store.notifications import change_waiter
from identity.throttle import AttemptThrottle
from identity.tls import server_credentials
from identity.tokens import TokenCodec
from identity.v1 import (
    audit_service_pb2,
    audit_service_pb2_grpc,
    authorization_service_pb2,
    authorization_service_pb2_grpc,
    key_service_pb2,
    key_service_pb2_grpc,
    organization_service_pb2,
    organization_service_pb2_grpc,
    principal_service_pb2,
    principal_service_pb2_grpc,
    token_service_pb2,
    token_service_pb2_grpc,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

SERVICE_NAMES = tuple(
    module.DESCRIPTOR.services_by_name[name].full_name
    for module, name in (
        (organization_service_pb2, "OrganizationService"),
        (principal_service_pb2, "PrincipalService"),
        (key_service_pb2, "KeyService"),
        (token_service_pb2, "TokenService"),
        (authorization_service_pb2, "AuthorizationService"),
        (audit_service_pb2, "AuditService"),
    )
)
HEALTH_CHECK_SECONDS = 1.0


class IdentityServer:
    """A started-or-startable gRPC server with its database, health reporting and clean stop."""

    def __init__(self, settings: Settings, db: Database, *, reuse_port: bool = False) -> None:
        """Assemble every servicer over ``db``; call :meth:`start` to serve.

        ``reuse_port`` lets several worker processes share one listening port (SO_REUSEPORT).
        """
        self.db = db
        self._stopping = threading.Event()
        self._health_lock = threading.Lock()
        self._credentials = server_credentials(settings)  # read now: a bad file stops the start
        self.hasher = hasher = BoundedHasher(
            SecretHasher(settings.argon2), settings.argon2_pool_threads, settings.argon2_queue
        )
        audit = AuditLog(db)
        self.writer = BackgroundWriter(db)
        cache = KeyStateCache(settings.cache_entries)
        self.feed = ChangeFeed(db, cache, change_waiter(db.engine.url))
        keyring = Keyring(db, load_kek(settings.kek, settings.kek_file), settings.signing_algorithm)
        verified = VerifiedCredentials(settings.cache_entries)
        self.authenticator = authenticator = Authenticator(
            CredentialStore(db, cache),
            hasher,
            TokenCodec(keyring, settings.token_issuer, settings.token_audiences),
            verified,
            AttemptThrottle(settings.failed_attempts_per_key, settings.failed_attempts_per_peer),
        )
        memo: AllowMemo[Decision] = AllowMemo(cache, verified.fingerprint)
        engine = DecisionEngine(authenticator, self.writer, memo, audit_allows=settings.audit_check_allows)
        answers = CheckAnswers(engine, AllowMemo(cache, verified.fingerprint))
        rpcs = RpcTally() if settings.metrics_listen else None
        self.interceptor = IdentityInterceptor(
            authenticator, audit.record_refusal, rpcs, {answers_method: answers}
        )
        self._options = [
            ("grpc.max_receive_message_length", settings.max_request_bytes),
            ("grpc.so_reuseport", 1 if reuse_port else 0),
        ]
        self._executor = futures.ThreadPoolExecutor(max_workers=settings.threads, thread_name_prefix="rpc")
        self._loop: asyncio.AbstractEventLoop | None = None  # with the gRPC server, made on first bind
        self._grpc_server: grpc.aio.Server | None = None
        self._stopped = threading.Event()
        server = _Registrations()
        self.generic_handlers = server.generic_handlers
        organization_service_pb2_grpc.add_OrganizationServiceServicer_to_server(
            OrganizationServicer(Organizations(db)), server
        )
        principal_service_pb2_grpc.add_PrincipalServiceServicer_to_server(
            PrincipalServicer(Principals(db, hasher)), server
        )
        key_service_pb2_grpc.add_KeyServiceServicer_to_server(
            KeyServicer(Keys(db, hasher), self.feed), server
        )
        audit_service_pb2_grpc.add_AuditServiceServicer_to_server(AuditServicer(audit), server)
        token_service_pb2_grpc.add_TokenServiceServicer_to_server(
            TokenServicer(TokenExchange(db, authenticator, keyring, self.writer)), server
        )
        authorization_service_pb2_grpc.add_AuthorizationServiceServicer_to_server(
            AuthorizationServicer(engine), server
        )
        external_auth_pb2_grpc.add_AuthorizationServicer_to_server(EnvoyAuthorizationServicer(engine), server)
        self.health = health_aio.HealthServicer()
        self._monitor = threading.Thread(target=self._watch_database, name="health", daemon=True)
        lookups = {
            "secrets": verified.secret_lookups,
            "tokens": verified.token_lookups,
            "key_states": cache.lookups,
            "allows": memo.lookups,
            "answers": answers.lookups,
        }
        self.telemetry = Telemetry(rpcs, lookups, hasher, self.feed)

    def handler(
        self, method: str, metadata: tuple[tuple[str, str], ...] = ()
    ) -> grpc.RpcMethodHandler | None:
        """The handler grpcio would run for ``method``, through the interceptor, for in-process callers.

        The fuzz harness calls it to drive every RPC without a socket; served calls never do.
        """
        return self._find(_CallDetails(method, metadata))

    def bind(self, address: str) -> int:
        """Listen on ``address`` (``host:port``; port 0 picks a free one) and return the port.

        TLS when configured, else plaintext.
        """
        server = self._serving()
        if self._credentials is None:
            port = self._on_loop(_call(server.add_insecure_port, address))
        else:
            port = self._on_loop(_call(server.add_secure_port, address, self._credentials))
        if port == 0:
            raise OSError(f"cannot listen on {address}")
        return int(port)

    def start(self) -> None:
        """Start following the change log, serving, and reporting health."""
        self.feed.start()
        self._on_loop(self._serving().start())
        self.writer.start()
        self._set_health(self.db.ping())
        self._monitor.start()

    def stop(self, grace: float) -> None:
        """Drain: refuse new calls, report NOT_SERVING, end watch streams; calls in flight get ``grace``."""
        with self._health_lock:
            stopping = self._stopping.is_set()
            self._stopping.set()
        if stopping:  # stopped, or stopping on another thread: once is enough
            self._stopped.wait()
            return
        server, loop = self._serving(), self._loop
        assert loop is not None
        # Refuse new calls first: a client told NOT_SERVING must not get a call accepted after it.
        # (The stop takes effect at its first step; the loop runs scheduled steps in order.)
        drained = asyncio.run_coroutine_threadsafe(server.stop(grace), loop)
        self._on_loop(self.health.enter_graceful_shutdown())  # open health watches hear it
        self.feed.stop()  # ends watch streams; the cache then ages out and calls read the database
        drained.result()
        self._executor.shutdown(wait=True)
        self.hasher.shutdown()
        self.writer.stop()  # after the last call: batched audit events and last-used times are flushed
        self.db.dispose()
        loop.call_soon_threadsafe(loop.stop)
        self._stopped.set()

    def wait(self) -> None:
        """Block until the server has stopped (signals are still handled meanwhile)."""
        while not self._stopped.wait(1.0):
            pass

    def _serving(self) -> grpc.aio.Server:
        """The gRPC server, made on first use, with its event loop on a thread of its own."""
        if self._grpc_server is None:
            loop = asyncio.new_event_loop()
            threading.Thread(target=_run_loop, args=(loop,), name="grpc-loop", daemon=True).start()
            self._loop = loop
            self._grpc_server = self._on_loop(self._make_grpc_server())
        return self._grpc_server

    async def _make_grpc_server(self) -> grpc.aio.Server:
        server = grpc.aio.server(options=self._options)
        door = LoopDoor(self._find, self._executor, HOT_METHODS, self.interceptor.remembered)
        # Health and reflection are served through generic handlers too, never as registered
        # methods: for every call it accepts, grpcio's asyncio server waits on one future per
        # registered method: health's and reflection's four cost each call about 23,000
        # instructions more on the event loop, a seventh of an empty call's (bench/RESULTS.md).
        others = _Registrations()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, others)
        envoy_service = external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"].full_name
        described = (*SERVICE_NAMES, envoy_service, health.SERVICE_NAME, reflection.SERVICE_NAME)
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
            reflection.aio.ReflectionServicer(described), others
        )
        server.add_generic_rpc_handlers((door, *others.generic_handlers))
        return server

    def _find(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        return self.interceptor.intercept_service(self._registered, details)

    def _registered(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handlers = (h.service(details) for h in self.generic_handlers)
        return next((h for h in handlers if h is not None), None)

    def _on_loop(self, work: Coroutine[Any, Any, T]) -> T:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(work, self._loop).result()

    def _set_health(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *SERVICE_NAMES):
            self._on_loop(self.health.set(name, status))

    def _watch_database(self) -> None:
        # NOT_SERVING while the database does not answer, so load balancers route elsewhere.
        serving = True
        while not self._stopping.wait(HEALTH_CHECK_SECONDS):
            now_serving = self.db.ping()
            with self._health_lock:  # the stop waits for this, then reports NOT_SERVING for good
                if now_serving != serving and not self._stopping.is_set():
                    log.warning(
                        "database %s", "reachable again" if now_serving else "unreachable: NOT_SERVING"
                    )
                    self._set_health(now_serving)
            serving = now_serving


class _CallDetails(grpc.HandlerCallDetails):  # type: ignore[misc]
    def __init__(self, method: str, metadata: tuple[tuple[str, str], ...]) -> None:
        self.method = method
        self.invocation_metadata = metadata


class _Registrations:
    """Where the generated ``add_*_to_server`` functions register servicers' handlers: as generic ones only.

    grpcio never sees the identity servicers' directly: :class:`LoopDoor` serves them through
    the interceptor, and :meth:`IdentityServer.handler` finds exactly the same ones.
    """

    def __init__(self) -> None:
        self.generic_handlers: list[grpc.GenericRpcHandler] = []

    def add_generic_rpc_handlers(self, handlers: tuple[grpc.GenericRpcHandler, ...]) -> None:
        self.generic_handlers.extend(handlers)

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        """Ignored: the same handlers came through :meth:`add_generic_rpc_handlers`."""


async def _call(function: Any, *args: Any) -> Any:
    return function(*args)


def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
    # Nothing may wait on the loop's thread: a call about to is run again on a request thread.
    forbid_blocking()
    asyncio.set_event_loop(loop)
    loop.run_forever()
    loop.close()


def build_server(
    settings: Settings, listen: str | None = None, *, reuse_port: bool = False
) -> tuple[IdentityServer, int]:
    """Build the server over ``settings.database_url`` and bind it; migrate an embedded SQLite database."""
    db = Database(settings.database_url)
    if db.is_sqlite:
        db.migrate()
    server = IdentityServer(settings, db, reuse_port=reuse_port)
    return server, server.bind(listen or settings.listen)
