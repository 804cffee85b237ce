"""Shared benchmark harness.

Servers run in their own processes, a threaded load client drives them, and every figure is
divided by the empty-handler baseline measured on the same harness in the same run.
"""

from __future__ import annotations

import argparse
import base64
import multiprocessing
import secrets
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import grpc

EMPTY_METHOD = "/bench.Empty/Call"


@dataclass(frozen=True)
class Run:
    """One measured load run."""

    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def _serve_empty(threads: int, ready: Connection) -> None:
    handler = grpc.method_handlers_generic_handler(
        "bench.Empty", {"Call": grpc.unary_unary_rpc_method_handler(lambda request, context: b"")}
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    ready.send(port)
    server.wait_for_termination()


@contextmanager
def process_server(target: Callable[..., None], *args: object) -> Iterator[int]:
    """Run ``target(*args, ready_pipe)`` in a child process; yield the port it reports."""
    receive, send = multiprocessing.Pipe(duplex=False)
    process = multiprocessing.get_context("spawn").Process(target=target, args=(*args, send), daemon=True)
    process.start()
    try:
        if not receive.poll(120):
            raise RuntimeError("the benchmark server did not start")
        yield int(receive.recv())
    finally:
        process.terminate()
        process.join(10)


@contextmanager
def empty_server(threads: int = 32) -> Iterator[int]:
    """The baseline: a grpcio server whose only handler returns an empty message."""
    with process_server(_serve_empty, threads) as port:
        yield port


def empty_call(channel: grpc.Channel) -> Callable[[], object]:
    """A call to the empty handler."""
    method = channel.unary_unary(EMPTY_METHOD)
    return lambda: method(b"", timeout=10)


def load(call: Callable[[], object], concurrency: int, seconds: float) -> Run:
    """Call ``call`` from ``concurrency`` threads for ``seconds``; count calls, errors and latency."""
    deadline = time.perf_counter() + seconds
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors = [0] * concurrency

    def worker(index: int) -> None:
        mine = latencies[index]
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                call()
            except grpc.RpcError:
                errors[index] += 1
            mine.append(time.perf_counter() - started)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    samples = sorted(x for per_thread in latencies for x in per_thread)
    if not samples:
        return Run(0.0, 0.0, 0.0, sum(errors))
    return Run(
        rps=len(samples) / elapsed,
        p50_ms=samples[len(samples) // 2] * 1000,
        p99_ms=samples[min(len(samples) - 1, int(len(samples) * 0.99))] * 1000,
        errors=sum(errors),
    )


def median_run(runs: list[Run]) -> Run:
    """The median of each figure over several runs (this machine is noisy)."""
    return Run(
        rps=statistics.median(r.rps for r in runs),
        p50_ms=statistics.median(r.p50_ms for r in runs),
        p99_ms=statistics.median(r.p99_ms for r in runs),
        errors=sum(r.errors for r in runs),
    )


def table(rows: dict[str, Run], baseline: str) -> str:
    """A plain-text table of every row and its throughput as a ratio of the baseline."""
    base = rows[baseline].rps or 1.0
    lines = [f"{'case':<34}{'rps':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}{'x baseline':>12}"]
    for name, run in rows.items():
        lines.append(
            f"{name:<34}{run.rps:>10.0f}{run.p50_ms:>10.2f}{run.p99_ms:>10.2f}{run.errors:>8}{run.rps / base:>12.3f}"
        )
    return "\n".join(lines)


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


@contextmanager
def identity_server() -> Iterator[tuple[int, str]]:
    """The identity server (production argon2id profile, embedded SQLite) and its platform key."""
    with tempfile.TemporaryDirectory() as tmp:
        key_file = Path(tmp) / "key"
        with process_server(_serve_identity, str(Path(tmp) / "identity.db"), str(key_file)) as port:
            yield port, key_file.read_text()


def options_parser(description: str | None) -> argparse.ArgumentParser:
    """The options every benchmark takes."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="length of one run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case; the table shows medians")
    parser.add_argument("--concurrency", type=int, default=8, help="client threads")
    return parser


def measure(call: Callable[[], object], options: argparse.Namespace) -> Run:
    """Warm up once, then the median of ``--repeat`` runs of ``--seconds`` each."""
    call()
    load(call, options.concurrency, 1.0)
    return median_run([load(call, options.concurrency, options.seconds) for _ in range(options.repeat)])
