"""Token exchange throughput for a warm key, against an empty grpcio handler on the same harness.

Usage (from the repository root): python -m bench.exchange [--seconds 5] [--repeat 3] [--concurrency 8]

Both servers run in their own process with the same thread pool; the load comes from this
process. Each case runs --repeat times and the table shows medians. The identity server uses
the production argon2id profile (19 MiB, t=2, p=1) and an embedded SQLite database.
"""

from __future__ import annotations

import grpc

from bench.harness import Run, empty_call, empty_server, identity_server, measure, options_parser, table
from identity.v1 import token_service_pb2, token_service_pb2_grpc


def main() -> None:
    """Measure and print the table."""
    options = options_parser(__doc__).parse_args()
    rows: dict[str, Run] = {}
    with empty_server() as port, grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        rows["empty grpcio handler (baseline)"] = measure(empty_call(channel), options)
    with identity_server() as (port, platform_key), grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = token_service_pb2_grpc.TokenServiceStub(channel)
        request = token_service_pb2.ExchangeApiKeyRequest(api_key=platform_key)

        def exchange() -> object:
            return stub.ExchangeApiKey(request, timeout=30)

        rows["ExchangeApiKey (v2), warm key"] = measure(exchange, options)
    print(
        f"concurrency {options.concurrency}, {options.seconds:.0f} s per run, median of {options.repeat} runs"
    )
    print(table(rows, "empty grpcio handler (baseline)"))


if __name__ == "__main__":
    main()
