"""The servers under test, each in processes of its own: the empty baseline and identity itself."""

from __future__ import annotations

import asyncio
import base64
import multiprocessing
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from bench.rpc import EMPTY_SERVICE, BenchError
from identity.affinity import core_for, pin_process

START_SECONDS = 60.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
STOP_SECONDS = 30.0
# The caches a warm call is answered from (the server's identity_cache_lookups_total): remembered
# Check answers, then the key-state cache, whose miss reads the database.
CACHES = ("answers", "key_states")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class Workers:
    """How a server runs: ``count`` processes, each on a core of its own when ``pinned``."""

    count: int
    pinned: bool = False

    def __str__(self) -> str:
        """``2``, or ``2 pinned``."""
        return f"{self.count} pinned" if self.pinned else str(self.count)


def _serve_empty(port: int, core: int | None, ready: Connection) -> None:
    if core is not None:
        pin_process(core)
    asyncio.run(_empty_server(port, ready))  # until SIGTERM ends the process


async def _empty_server(port: int, ready: Connection) -> None:
    async def empty(_request: bytes, _context: grpc.aio.ServicerContext) -> bytes:
        return b""

    handler = grpc.method_handlers_generic_handler(
        EMPTY_SERVICE, {"Call": grpc.unary_unary_rpc_method_handler(empty)}
    )
    server = grpc.aio.server(options=[("grpc.so_reuseport", 1)])
    server.add_generic_rpc_handlers((handler,))
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    ready.send(bound)
    await server.wait_for_termination()


@dataclass(frozen=True)
class EmptyServer:
    """A running baseline: the port its workers share, and their process ids."""

    port: int
    pids: tuple[int, ...]

    def cpu_seconds(self) -> float:
        """The CPU its workers have spent so far."""
        return sum(cpu_seconds(pid) for pid in self.pids)


@contextmanager
def empty_server(workers: Workers) -> Iterator[EmptyServer]:
    """The baseline: ``workers`` processes serving an empty grpcio handler on one port.

    Each process serves as an identity worker does (grpcio's asyncio server, the handler on the
    event loop, SO_REUSEPORT, pinned as ``--pin-workers`` pins), so the difference between the
    two is the identity service's own work.
    """
    port = free_port()
    context = multiprocessing.get_context("spawn")
    processes = []
    try:
        for index in range(workers.count):
            receive, send = context.Pipe(duplex=False)
            core = core_for(index) if workers.pinned else None
            process = context.Process(target=_serve_empty, args=(port, core, send), daemon=True)
            process.start()
            processes.append(process)
            if not receive.poll(START_SECONDS) or receive.recv() != port:
                raise BenchError(f"an empty-handler worker could not serve on port {port}")
        yield EmptyServer(port, tuple(process.pid for process in processes if process.pid is not None))
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.join(STOP_SECONDS)


def wait_serving(address: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait until ``address`` answers health SERVING; fail if ``process`` exits first."""
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise BenchError(f"the identity server exited with status {process.returncode}")
            try:
                reply = health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    raise BenchError(f"the identity server did not report SERVING within {timeout:.0f} s")


@dataclass(frozen=True)
class IdentityProcess:
    """A running ``identity serve``: where it listens and its process."""

    port: int
    workers: Workers
    process: subprocess.Popen[bytes]
    metrics_port: int

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``."""
        return f"127.0.0.1:{self.port}"

    def worker_pids(self) -> list[int]:
        """The processes that serve calls: the serve process itself with one worker, else its workers."""
        if self.workers.count <= 1:
            return [self.process.pid]
        return spawned_children(self.process.pid)

    def usage(self) -> Usage:
        """What the workers have spent so far, from their metrics and /proc."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as reply:
            samples = [
                sample
                for family in text_string_to_metric_families(reply.read().decode())
                for sample in family.samples
            ]
        totals = {sample.name: sample.value for sample in samples if not sample.labels}
        lookups = {
            (sample.labels["cache"], sample.labels["result"]): sample.value
            for sample in samples
            if sample.name == "identity_cache_lookups_total"
        }
        return Usage(
            argon2_hashes=totals["identity_argon2_hashes_total"],
            argon2_cpu_seconds=totals["identity_argon2_cpu_seconds_total"],
            cpu_seconds=sum(cpu_seconds(pid) for pid in self.worker_pids()),
            lookups=tuple(
                (cache, lookups.get((cache, "hit"), 0.0), lookups.get((cache, "miss"), 0.0))
                for cache in CACHES
            ),
        )


@dataclass(frozen=True)
class Usage:
    """Counters of an identity server's workers so far.

    argon2id hashes done and the CPU they took, the workers' CPU, and each of :data:`CACHES`'s
    hits and misses.
    """

    argon2_hashes: float
    argon2_cpu_seconds: float
    cpu_seconds: float
    lookups: tuple[tuple[str, float, float], ...]  # (cache, hits, misses), in CACHES' order

    def __sub__(self, earlier: Usage) -> Usage:
        """What was spent since ``earlier``."""
        return Usage(
            self.argon2_hashes - earlier.argon2_hashes,
            self.argon2_cpu_seconds - earlier.argon2_cpu_seconds,
            self.cpu_seconds - earlier.cpu_seconds,
            tuple(
                (cache, hits - was_hits, misses - was_misses)
                for (cache, hits, misses), (_, was_hits, was_misses) in zip(
                    self.lookups, earlier.lookups, strict=True
                )
            ),
        )


def identity_command() -> str:
    """The ``identity`` console script of the interpreter running the benchmark."""
    path = Path(sys.executable).parent / "identity"
    if not path.exists():
        raise SystemExit(f"bench: {path} not found; install the project first: pip install -e '.[dev]'")
    return str(path)


def new_kek() -> str:
    """A random key-encryption key, base64 of 32 bytes, for one benchmark run."""
    return base64.b64encode(secrets.token_bytes(32)).decode()


@contextmanager
def identity_server(
    database_url: str, workers: Workers, kek: str, log_path: Path
) -> Iterator[IdentityProcess]:
    """Run ``identity serve --workers N`` (``--pin-workers`` when pinned) on a free port until the block ends.

    At the end: SIGTERM, and wait.

    The server gets a clean environment: every inherited ``IDENTITY_*`` variable is dropped, so
    it runs the production defaults (argon2id profile included) plus the database, the KEK, log
    level WARNING and metrics on a free port (read by :meth:`IdentityProcess.usage`). Its output
    goes to ``log_path``.
    """
    port, metrics_port = free_port(), free_port()
    env = {name: value for name, value in os.environ.items() if not name.startswith("IDENTITY_")}
    env.update(
        IDENTITY_DATABASE_URL=database_url,
        IDENTITY_KEK=kek,
        IDENTITY_LOG_LEVEL="WARNING",
        IDENTITY_METRICS_LISTEN=f"127.0.0.1:{metrics_port}",
    )
    command = [identity_command(), "serve", "--workers", str(workers.count), "--listen", f"127.0.0.1:{port}"]
    if workers.pinned:
        command.append("--pin-workers")
    with log_path.open("ab") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603
    try:
        wait_serving(f"127.0.0.1:{port}", process, START_SECONDS)
        yield IdentityProcess(port, workers, process, metrics_port)
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then wait; SIGKILL if it has not exited in time."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def spawned_children(pid: int) -> list[int]:
    """Child processes of ``pid`` started by multiprocessing's spawn (not its resource tracker)."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue  # exited meanwhile
        parent = int(stat.rpartition(")")[2].split()[1])
        if parent == pid and b"spawn_main" in command:
            children.append(int(entry.name))
    return sorted(children)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` so far, every thread of it."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def memory_mib(pid: int, field: str) -> float:
    """A memory figure of /proc/PID/status in MiB: ``VmHWM`` (peak resident set) or ``VmRSS`` (now)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise BenchError(f"no {field} in /proc/{pid}/status")
