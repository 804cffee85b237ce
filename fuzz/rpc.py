"""Fuzz target: arbitrary bytes as the request of every RPC, called in-process through the interceptor.

Input layout (:func:`encode` writes it, :func:`decode` reads it)::

    byte 0      which RPC: an index into :func:`identity_rpcs` (modulo their number)
    byte 1      the caller metadata: an index into CALLERS (modulo)
    byte 2      for a fuzzed caller only: n, the length of the fuzzed metadata value
    n bytes     that value (only printable ASCII is kept: gRPC carries nothing else)
    the rest    the serialized request (inputs that do not parse are skipped, as grpcio refuses them)

Invariants, on every input: no exception but the abort; never INTERNAL, UNKNOWN or (with the
database up) UNAVAILABLE; no warning logged (a failed database statement, an audit event that
could not be written, even off the request path); an
authenticated RPC succeeds only for a real caller credential holding the RPC's scope; an allow
(Check, BatchCheck, Envoy's Check), an active introspection or a minted token only for a real
credential the harness supplied, and an allow only for permissions that credential holds.

Run: ``.venv/bin/python -m fuzz rpc fuzz/corpus/rpc -max_total_time=300`` (libFuzzer flags).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import grpc
from envoy.service.auth.v3 import external_auth_pb2
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import DecodeError, Message

from fuzz.common import (
    CREDENTIALS,
    World,
    invoke,
    method_path,
    request_class,
    rpc_methods,
    substitute_fields,
    world,
)
from identity.services.rules import RULES
from identity.v1 import authorization_service_pb2, token_service_pb2

# (metadata key, value, fuzzed): a placeholder value is a real credential of the world; a fuzzed
# one gets the input's bytes appended to the value given here.
CALLERS: tuple[tuple[str, str, bool] | None, ...] = (
    None,
    ("authorization", "Bearer $PLATFORM_KEY", False),
    ("x-api-key", "$PLATFORM_KEY", False),
    ("authorization", "Bearer $PLATFORM_TOKEN", False),
    ("authorization", "Bearer $TENANT_KEY", False),
    ("authorization", "", True),
    ("x-api-key", "", True),
    ("authorization", "Bearer ", True),
)
_NOT_PRINTABLE = re.compile(r"[^\x20-\x7e]")
_BEARER = re.compile(r"\s*bearer\s+(.*?)\s*", re.IGNORECASE | re.DOTALL)
# INTERNAL and UNKNOWN are bugs; so is UNAVAILABLE here, where the database is always up: an input
# the database refuses must be refused as INVALID_ARGUMENT before it gets there.
FAILURES = (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.UNAVAILABLE)


@dataclass(frozen=True)
class Call:
    """One decoded input: the RPC, its metadata, which real credential calls (if any), the request bytes."""

    method: MethodDescriptor
    metadata: tuple[tuple[str, str], ...]
    caller: str | None  # the placeholder of a real caller credential; None when absent or fuzzed
    body: bytes


def identity_rpcs() -> list[MethodDescriptor]:
    """The RPCs an input can choose, in the stable order its first byte indexes."""
    return rpc_methods()


def decode(data: bytes, the_world: World) -> Call | None:
    """The call an input describes, or None when it is too short to describe one."""
    if len(data) < 2:
        return None
    methods = identity_rpcs()
    method = methods[data[0] % len(methods)]
    caller_mode = CALLERS[data[1] % len(CALLERS)]
    rest = data[2:]
    if caller_mode is None:
        return Call(method, (), None, rest)
    name, value, fuzzed = caller_mode
    if not fuzzed:
        real = value.removeprefix("Bearer ")
        return Call(method, ((name, the_world.substitute(value)),), real, rest)
    if not rest:
        return None
    length, rest = rest[0], rest[1:]
    fuzz_value = _NOT_PRINTABLE.sub("", rest[:length].decode("latin-1"))
    return Call(method, ((name, value + fuzz_value),), None, rest[length:])


def encode(method: MethodDescriptor, caller_index: int, request: Message, fuzz_value: bytes = b"") -> bytes:
    """The input that :func:`decode` reads as this call (for seeding the corpus)."""
    header = bytes([identity_rpcs().index(method), caller_index])
    mode = CALLERS[caller_index]
    if mode is not None and mode[2]:
        header += bytes([len(fuzz_value)]) + fuzz_value
    return header + request.SerializeToString(deterministic=True)


def check_rpc(data: bytes, the_world: World | None = None) -> None:
    """Run one input and assert the invariants (the fuzz entry point, also used by the corpus test).

    In ``the_world``, by default :func:`world`.
    """
    the_world = the_world or world()
    call = decode(data, the_world)
    if call is None:
        return
    path = method_path(call.method)
    handler = the_world.server.handler(path, call.metadata)
    assert handler is not None, f"{path}: not served"
    try:
        request = request_class(call.method).FromString(call.body)
    except DecodeError:
        return  # grpcio, or the door for a method it gets undecoded, refuses such bytes before any handler runs
    supplied = call.caller is not None or any(name.encode() in call.body for name in CREDENTIALS)
    substitute_fields(request, the_world)
    code, responses = invoke(the_world.server, path, request, call.metadata)
    assert code not in FAILURES, f"{path} answered {code.name}"
    the_world.server.writer.flush()  # the audit events the call queued must be writable
    warnings, the_world.warnings[:] = list(the_world.warnings), []
    assert not warnings, f"{path} logged {warnings}"
    if code is not grpc.StatusCode.OK:
        return
    rule = RULES[path]
    if rule.authenticated:
        assert call.caller is not None, f"{path} succeeded for a fuzzed caller credential"
        rights = the_world.rights[call.caller]
        assert rule.scope is None or rights is None or rule.scope in rights, f"{path}: {call.caller}"
    for response in responses:
        _check_allows(the_world, request, response, supplied)


def _check_allows(the_world: World, request: Message, response: Message, supplied: bool) -> None:
    if isinstance(request, authorization_service_pb2.CheckRequest):
        assert isinstance(response, authorization_service_pb2.CheckResponse)
        if response.allowed:
            _assert_holds(the_world, request.credential, request.permissions)
    elif isinstance(request, authorization_service_pb2.BatchCheckRequest):
        assert isinstance(response, authorization_service_pb2.BatchCheckResponse)
        assert len(response.results) == len(request.items), "one result per item"
        for item, result in zip(request.items, response.results, strict=True):
            if result.allowed:
                _assert_holds(the_world, request.credential, item.permissions)
    elif isinstance(request, external_auth_pb2.CheckRequest):
        assert isinstance(response, external_auth_pb2.CheckResponse)
        if response.status.code == 0:
            attributes = request.attributes
            permission = attributes.context_extensions.get("permission", "")
            _assert_holds(the_world, _envoy_credential(attributes.request.http.headers), permission.split())
    elif isinstance(response, token_service_pb2.IntrospectTokenResponse):
        assert isinstance(request, token_service_pb2.IntrospectTokenRequest)
        assert not response.active or the_world.real_credential(request.token), "an active fuzzed token"
    if "access_token" in response.DESCRIPTOR.fields_by_name and getattr(response, "access_token", None):
        assert supplied, "a token minted without a real credential"


def _assert_holds(the_world: World, credential: str, permissions: Iterable[str]) -> None:
    real = the_world.real_credential(credential)
    assert real is not None, "allowed a credential the harness did not supply"
    rights = the_world.rights[real]
    assert rights is None or set(permissions) <= rights, f"allowed {permissions!r} to {real}"


def _envoy_credential(headers: Mapping[str, str]) -> str:
    # The oracle's own reading of API.md: authorization (Bearer) wins over x-api-key.
    lowered = {k.lower(): v for k, v in headers.items()}
    if "authorization" in lowered:
        match = _BEARER.fullmatch(lowered["authorization"])
        return match.group(1) if match else ""
    return str(lowered.get("x-api-key", ""))
