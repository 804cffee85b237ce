"""The calls the benchmark makes: method paths, request bytes, and what a right answer is.

Load generators send serialized requests and see raw response bytes, so everything here works
on bytes; :func:`probe` makes one real call with grpcio first to check that a request gets the
answer the case expects, and measures the size of that answer on the wire.
"""

from __future__ import annotations

from enum import Enum

import grpc
from google.protobuf.duration_pb2 import Duration

from identity.v1 import authorization_service_pb2, token_service_pb2

CHECK = "/identity.v1.AuthorizationService/Check"
EXCHANGE = "/identity.v1.TokenService/ExchangeApiKey"
EMPTY_SERVICE = "bench.Empty"
EMPTY = f"/{EMPTY_SERVICE}/Call"
PERMISSION = "inventory:read"
TOKEN_LIFETIME_SECONDS = 3600
TIMEOUT_SECONDS = 60.0


class BenchError(RuntimeError):
    """The benchmark cannot measure what it was asked to (a wrong answer, a missing tool)."""


class Answer(Enum):
    """What a case expects from each call."""

    EMPTY = "an empty message"
    ALLOWED = "Check allowed=true"
    TOKEN = "an access token"


def check_request(credential: str) -> bytes:
    """A Check of ``credential`` for the benchmark's one permission."""
    request = authorization_service_pb2.CheckRequest(credential=credential, permissions=[PERMISSION])
    return request.SerializeToString()


def exchange_request(api_key: str, lifetime_seconds: int = 0) -> bytes:
    """A v2 ExchangeApiKey of ``api_key``; a lifetime of 0 asks for the default."""
    request = token_service_pb2.ExchangeApiKeyRequest(api_key=api_key)
    if lifetime_seconds:
        request.lifetime.CopyFrom(Duration(seconds=lifetime_seconds))
    return request.SerializeToString()


def grpc_frame(message: bytes) -> bytes:
    """A gRPC length-prefixed message: flag 0 (uncompressed), 4-byte big-endian length, the bytes."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def is_expected(answer: Answer, response: bytes) -> bool:
    """Whether a serialized response is the answer a case expects."""
    if answer is Answer.EMPTY:
        return response == b""
    if answer is Answer.ALLOWED:
        return authorization_service_pb2.CheckResponse.FromString(response).allowed
    return bool(token_service_pb2.ExchangeApiKeyResponse.FromString(response).access_token)


def raw_call(channel: grpc.Channel, method: str, request: bytes) -> bytes:
    """Call ``method`` with a serialized request; return the serialized response."""
    call = channel.unary_unary(method)
    response: bytes = call(request, timeout=TIMEOUT_SECONDS)
    return response


def probe(address: str, method: str, request: bytes, answer: Answer, *, times: int = 3) -> int:
    """Check that ``request`` gets ``answer``; return the size of that answer's gRPC frame.

    The call is made ``times`` times: a load generator that only counts response bytes relies on
    every right answer having the same size, so differing sizes are an error here too.
    """
    sizes = set()
    with grpc.insecure_channel(address) as channel:
        for _ in range(times):
            try:
                response = raw_call(channel, method, request)
            except grpc.RpcError as error:
                raise BenchError(f"{method}: expected {answer.value}, got {error.code().name}") from error
            if not is_expected(answer, response):
                raise BenchError(f"{method}: expected {answer.value}, got another answer")
            sizes.add(len(grpc_frame(response)))
    if len(sizes) != 1:
        raise BenchError(f"{method}: the same request got answers of different sizes {sorted(sizes)}")
    return sizes.pop()


def probe_refused(address: str, method: str, request: bytes) -> str:
    """Check that ``request`` is refused with an RPC error; return the status code's name."""
    with grpc.insecure_channel(address) as channel:
        try:
            raw_call(channel, method, request)
        except grpc.RpcError as error:
            return str(error.code().name)
    raise BenchError(f"{method}: expected a refusal, the call succeeded")
