"""Token exchange throughput for a warm key, against an empty grpcio handler on the same harness.

Usage (from the repository root): python -m bench.exchange [--seconds 5] [--repeat 3] [--concurrency 8]

Both servers run in their own process with the same thread pool; the load comes from this
process. Each case runs --repeat times and the table shows medians. The identity server uses
the production argon2id profile (19 MiB, t=2, p=1) and an embedded SQLite database.
"""

from __future__ import annotations

import argparse
import base64
import secrets
import tempfile
from multiprocessing.connection import Connection
from pathlib import Path

import grpc

from bench.harness import Run, empty_call, empty_server, load, median_run, process_server, table
from identity.v1 import token_service_pb2, token_service_pb2_grpc


def _serve_identity(database: str, key_file: str, ready: Connection) -> None:
    from identity.app.bootstrap import bootstrap
    from identity.config import Settings
    from identity.crypto.hashing import SecretHasher
    from identity.server import build_server

    settings = Settings(
        database_url=f"sqlite:///{database}",
        listen="127.0.0.1:0",
        kek=base64.b64encode(secrets.token_bytes(32)).decode(),
        log_level="WARNING",
    )
    server, port = build_server(settings)
    Path(key_file).write_text(bootstrap(server.db, SecretHasher(settings.argon2)).api_key)
    server.start()
    ready.send(port)
    server.wait()


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    options = parser.parse_args()
    rows: dict[str, Run] = {}
    with tempfile.TemporaryDirectory() as tmp:
        key_file = Path(tmp) / "key"
        with empty_server() as port, grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = empty_call(channel)
            load(call, options.concurrency, 1.0)  # warm up
            rows["empty grpcio handler (baseline)"] = median_run(
                [load(call, options.concurrency, options.seconds) for _ in range(options.repeat)]
            )
        with (
            process_server(_serve_identity, str(Path(tmp) / "identity.db"), str(key_file)) as port,
            grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
        ):
            stub = token_service_pb2_grpc.TokenServiceStub(channel)
            request = token_service_pb2.ExchangeApiKeyRequest(api_key=key_file.read_text())

            def exchange() -> object:
                return stub.ExchangeApiKey(request, timeout=30)

            exchange()  # the key is now warm: its rows are in SQLite's page cache
            load(exchange, options.concurrency, 1.0)
            rows["ExchangeApiKey (v2), warm key"] = median_run(
                [load(exchange, options.concurrency, options.seconds) for _ in range(options.repeat)]
            )
    print(
        f"concurrency {options.concurrency}, {options.seconds:.0f} s per run, median of {options.repeat} runs"
    )
    print(table(rows, "empty grpcio handler (baseline)"))


if __name__ == "__main__":
    main()
