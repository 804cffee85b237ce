"""Check throughput and latency for a warm JWT and a warm API key, against an empty grpcio handler.

Usage (from the repository root): python -m bench.check [--seconds 5] [--repeat 3] [--concurrency 8]
"""

from __future__ import annotations

import grpc
from google.protobuf.duration_pb2 import Duration

from bench.harness import Run, empty_call, empty_server, identity_server, measure, options_parser, table
from identity.v1 import (
    authorization_service_pb2,
    authorization_service_pb2_grpc,
    token_service_pb2,
    token_service_pb2_grpc,
)


def main() -> None:
    """Measure and print the table."""
    options = options_parser(__doc__).parse_args()
    rows: dict[str, Run] = {}
    with empty_server() as port, grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        rows["empty grpcio handler (baseline)"] = measure(empty_call(channel), options)
    with identity_server() as (port, platform_key), grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        checks = authorization_service_pb2_grpc.AuthorizationServiceStub(channel)
        tokens = token_service_pb2_grpc.TokenServiceStub(channel)
        token = tokens.ExchangeApiKey(
            token_service_pb2.ExchangeApiKeyRequest(api_key=platform_key, lifetime=Duration(seconds=3600))
        ).access_token
        for name, credential in (("Check, warm JWT", token), ("Check, warm API key", platform_key)):
            request = authorization_service_pb2.CheckRequest(
                credential=credential, permissions=["inventory:read"]
            )

            def check(request: authorization_service_pb2.CheckRequest = request) -> object:
                reply = checks.Check(request, timeout=30)
                assert reply.allowed, reply
                return reply

            rows[name] = measure(check, options)
    print(
        f"concurrency {options.concurrency}, {options.seconds:.0f} s per run, median of {options.repeat} runs"
    )
    print(table(rows, "empty grpcio handler (baseline)"))


if __name__ == "__main__":
    main()
