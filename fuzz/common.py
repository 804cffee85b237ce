"""What the fuzz targets share: a real identity server in this process, and the credentials it knows.

The server is :class:`identity.server.IdentityServer` over a temporary SQLite database (or the
empty database ``IDENTITY_FUZZ_DATABASE_URL`` names), with
metrics off and a cheap argon2id profile. It never binds a port: calls reach the same handlers
grpcio would run, through the same :class:`IdentityInterceptor`, via ``IdentityServer.handler``.

Fuzz inputs may name the world's real ids and credentials by placeholder (``$PLATFORM_KEY``,
``$ORG``, ...): the harness substitutes them in every string field of a request, so the fuzzer
reaches code behind authentication and id lookups, and the invariants know which credentials the
harness (not the fuzzer) supplied.
"""

from __future__ import annotations

import atexit
import base64
import functools
import logging
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message

from identity.app.bootstrap import bootstrap
from identity.config import Settings
from identity.crypto.hashing import Argon2Profile, SecretHasher
from identity.server import SERVICE_NAMES, IdentityServer
from identity.services import keys as key_servicer
from identity.store.database import Database
from identity.v1.principal_service_pb2 import PRINCIPAL_KIND_SERVICE_ACCOUNT, PRINCIPAL_KIND_USER

DATABASE_ENV = "IDENTITY_FUZZ_DATABASE_URL"
ENVOY_SERVICE = "envoy.service.auth.v3.Authorization"
PEER = "ipv4:127.0.0.1:40000"
# Scopes of the tenant admin key: what an allow for it may grant, and nothing else.
TENANT_SCOPES = frozenset({"admin:apikeys", "admin:users", "read:audit", "inventory:read"})
# Credential placeholders; their rights: None for everything (the platform credential).
CREDENTIALS = ("$PLATFORM_KEY", "$PLATFORM_TOKEN", "$TENANT_KEY")


class Aborted(Exception):
    """What the fake context raises where grpcio's ``abort``/``abort_with_status`` would."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        """An RPC ended with ``code``."""
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


class FakeContext:
    """A ``grpc.ServicerContext`` stand-in that records how the call ended.

    ``active_checks`` bounds a server stream: ``is_active`` turns false after that many asks.
    """

    def __init__(self, metadata: tuple[tuple[str, str], ...], active_checks: int = 1) -> None:
        """A call from :data:`PEER` carrying ``metadata``."""
        self._metadata = metadata
        self._active_checks = active_checks
        self.code: grpc.StatusCode | None = None
        self.details = ""

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        """The call's metadata."""
        return self._metadata

    def peer(self) -> str:
        """The fixed peer address."""
        return PEER

    def is_active(self) -> bool:
        """True for the first ``active_checks`` asks, so a stream ends by itself."""
        self._active_checks -= 1
        return self._active_checks >= 0

    def set_code(self, code: grpc.StatusCode) -> None:
        """Record the code a handler set."""
        self.code = code

    def set_details(self, details: str) -> None:
        """Record the details a handler set."""
        self.details = details

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        """Raise :class:`Aborted`, as grpcio raises to end the handler."""
        self.code, self.details = code, details
        raise Aborted(code, details)

    def abort_with_status(self, status: grpc.Status) -> None:
        """Raise :class:`Aborted` with the status' code."""
        self.abort(status.code, status.details)


@dataclass
class World:
    """The server and the real ids and credentials placeholders stand for."""

    server: IdentityServer
    values: dict[str, str]
    rights: dict[str, frozenset[str] | None]
    warnings: list[str]  # shared by every world: calls run one at a time
    directory: Path

    def substitute(self, text: str) -> str:
        """``text`` with every placeholder replaced by its value."""
        if "$" not in text:
            return text
        for name, value in self.values.items():
            text = text.replace(name, value)
        return text

    def real_credential(self, credential: str) -> str | None:
        """The placeholder of ``credential`` if it is exactly a real one the harness holds, else None."""
        return next((name for name in CREDENTIALS if credential == self.values[name]), None)


def rpc_methods() -> list[MethodDescriptor]:
    """Every RPC of every identity.v1 service and Envoy's ext_authz, from the descriptors, in a stable order."""
    pool = descriptor_pool.Default()
    services = [pool.FindServiceByName(name) for name in (*SERVICE_NAMES, ENVOY_SERVICE)]
    methods = [method for service in services for method in service.methods]
    return sorted(methods, key=lambda m: m.full_name)


def method_path(method: MethodDescriptor) -> str:
    """The gRPC path of ``method``: ``/package.Service/Method``."""
    return f"/{method.containing_service.full_name}/{method.name}"


def request_class(method: MethodDescriptor) -> type[Message]:
    """The generated request message class of ``method``."""
    return message_factory.GetMessageClass(method.input_type)


def substitute_fields(message: Message, world: World) -> None:
    """Replace placeholders in every string field of ``message``, nested messages and map values included."""
    for field, value in message.ListFields():
        if field.type == FieldDescriptor.TYPE_STRING:
            if field.is_repeated:
                value[:] = [world.substitute(v) for v in value]
            else:
                setattr(message, field.name, world.substitute(value))
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            entry = field.message_type
            if entry is not None and entry.GetOptions().map_entry:
                entry_value = entry.fields_by_name["value"]
                for key in list(value):
                    if entry_value.type == FieldDescriptor.TYPE_STRING:
                        value[key] = world.substitute(value[key])
                    elif entry_value.type == FieldDescriptor.TYPE_MESSAGE:
                        substitute_fields(value[key], world)
            elif field.is_repeated:
                for item in value:
                    substitute_fields(item, world)
            else:
                substitute_fields(value, world)


def invoke(
    server: IdentityServer, path: str, request: Message, metadata: tuple[tuple[str, str], ...]
) -> tuple[grpc.StatusCode, list[Message]]:
    """Run one call in-process through the interceptor: its final code and its responses.

    A server stream is read for one pass of its loop (the fake context turns inactive after).
    Any exception other than the recorded abort propagates: that is a crash.
    """
    handler = server.handler(path, metadata)
    if handler is None:
        raise AssertionError(f"{path}: the server has no handler for it")
    context = FakeContext(metadata)
    # A method with a shortcut (identity.services.answers) takes and gives bytes; grpcio then
    # neither decodes nor encodes.
    encoded = handler.request_deserializer is None
    argument: Message | bytes = request.SerializeToString() if encoded else request
    responses: list[Any] = []
    try:
        if handler.unary_unary is not None:
            responses.append(handler.unary_unary(argument, context))
        else:
            responses.extend(handler.unary_stream(argument, context))
    except Aborted as aborted:
        return aborted.code, responses
    if encoded:
        response_class = message_factory.GetMessageClass(_method_of(path).output_type)
        responses = [response_class.FromString(response) for response in responses]
    else:
        for response in responses:
            handler.response_serializer(response)  # what grpcio does next: it must not fail either
    return context.code or grpc.StatusCode.OK, responses


def _method_of(path: str) -> MethodDescriptor:
    service, _, method = path.strip("/").partition("/")
    return descriptor_pool.Default().FindServiceByName(service).FindMethodByName(method)


def _settings(directory: Path, database_url: str) -> Settings:
    # An empty PostgreSQL database may be named instead: it refuses inputs SQLite takes (NUL).
    database_url = database_url or os.environ.get(DATABASE_ENV) or f"sqlite:///{directory / 'identity.db'}"
    return Settings(
        database_url=database_url,
        metrics_listen="",  # no metrics port, no counting
        # The cheapest argon2id: the fuzzer wants executions, not hashing.
        argon2=Argon2Profile(memory_kib=64, time_cost=1, parallelism=1),
        argon2_queue=64,
        # One peer sends everything: throttling would soon answer RATE_LIMITED before any real work.
        failed_attempts_per_key=10**9,
        failed_attempts_per_peer=10**9,
        kek=base64.b64encode(secrets.token_bytes(32)).decode(),
        kek_file=str(directory / "identity.kek"),
    )


def _admin_call(server: IdentityServer, path: str, request: Message, key: str) -> Any:
    code, responses = invoke(server, path, request, (("authorization", f"Bearer {key}"),))
    if code is not grpc.StatusCode.OK:
        raise RuntimeError(f"setting up the fuzz world: {path} answered {code.name}")
    return responses[0]


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.name}: {record.getMessage()}")


@functools.cache
def _warnings() -> list[str]:
    # No line per RPC; warnings are kept: with the database up, every one (a database failure, an
    # audit event that could not be written) is a bug the invariants report.
    logger = logging.getLogger("identity")
    logger.setLevel(logging.WARNING)
    collect = _Collect()
    logger.addHandler(collect)
    return collect.messages


_WORLDS: dict[str, World] = {}


def world(database_url: str = "") -> World:
    """The world of this process over ``database_url`` (an empty database), made on first use.

    Without a URL: the empty database ``IDENTITY_FUZZ_DATABASE_URL`` names, else a temporary
    SQLite file. A bootstrapped server with a sandbox and a tenant organization: the fuzzer may
    change the sandbox (its ids have placeholders) but cannot name the platform or tenant keys'
    own ids, so the credentials the invariants rely on keep their rights.
    """
    found = _WORLDS.get(database_url)
    if found is None:
        found = _WORLDS[database_url] = _make_world(database_url)
        atexit.register(close_world, database_url)
    return found


def close_world(database_url: str = "") -> None:
    """Stop the world over ``database_url`` (its threads, connections and temporary files), if made."""
    made = _WORLDS.pop(database_url, None)
    if made is not None:
        made.server.feed.stop()
        made.server.writer.stop()
        made.server.db.dispose()
        shutil.rmtree(made.directory, ignore_errors=True)


def _make_world(database_url: str) -> World:
    warnings = _warnings()
    # Waiting for new events is all a watch stream does after its first pass: not here.
    key_servicer.WATCH_POLL_SECONDS = 0.0
    directory = Path(tempfile.mkdtemp(prefix="identity-fuzz-"))
    settings = _settings(directory, database_url)
    db = Database(settings.database_url)
    db.migrate()
    server = IdentityServer(settings, db)
    platform_key = bootstrap(db, SecretHasher(settings.argon2)).api_key
    server.feed.start()
    server.writer.start()

    def admin(service: str, method: str, **fields: Any) -> Any:
        descriptor = descriptor_pool.Default().FindMethodByName(f"identity.v1.{service}.{method}")
        return _admin_call(server, method_path(descriptor), request_class(descriptor)(**fields), platform_key)

    account, user_kind = PRINCIPAL_KIND_SERVICE_ACCOUNT, PRINCIPAL_KIND_USER
    sandbox = admin("OrganizationService", "CreateOrganization", display_name="sandbox").organization.id
    robot = admin("PrincipalService", "CreatePrincipal", org_id=sandbox, kind=account, display_name="r")
    user = admin("PrincipalService", "CreatePrincipal", org_id=sandbox, kind=user_kind, display_name="u")

    def key(org_id: str, principal: Any, scopes: Iterable[str]) -> Any:
        fields = {"display_name": "k", "ttl_days": 30, "principal_id": principal.principal.id}
        return admin("KeyService", "CreateKey", org_id=org_id, scopes=sorted(scopes), **fields)

    sandbox_key = key(sandbox, robot, ["inventory:read"])
    tenant = admin("OrganizationService", "CreateOrganization", display_name="tenant").organization.id
    tenant_admin = admin("PrincipalService", "CreatePrincipal", org_id=tenant, kind=account, display_name="a")
    tenant_key = key(tenant, tenant_admin, TENANT_SCOPES)
    hour = Duration(seconds=3600)
    token = admin("TokenService", "ExchangeApiKey", api_key=platform_key, lifetime=hour).access_token
    values = {
        "$PLATFORM_KEY": platform_key,
        "$PLATFORM_TOKEN": token,
        "$TENANT_KEY": tenant_key.api_key,
        "$TENANT_ORG": tenant,
        "$ORG": sandbox,
        "$PRINCIPAL": robot.principal.id,
        "$USER": user.principal.id,
        "$KEY_ID": sandbox_key.key.id,
    }
    rights: dict[str, frozenset[str] | None] = {
        "$PLATFORM_KEY": None,
        "$PLATFORM_TOKEN": None,
        "$TENANT_KEY": TENANT_SCOPES,
    }
    del warnings[:]  # the setup's own
    return World(server, values, rights, warnings, directory)


def corpus_files(target: str) -> Iterator[Path]:
    """The saved corpus of ``target`` (``fuzz/corpus/<target>/``), in a stable order."""
    yield from sorted((Path(__file__).parent / "corpus" / target).glob("*"))
