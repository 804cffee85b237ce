"""Run ``identity serve`` as a real subprocess: a free port, the test environment, a log file,
a wait for health, and a stop that always happens."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from identity.app.bootstrap import bootstrap
from identity.app.keys import IssuedKey
from identity.crypto.hashing import SecretHasher
from identity.store.database import Database
from tests.conftest import TEST_ARGON2, TEST_KEK

IDENTITY = str(Path(sys.executable).parent / "identity")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def bootstrapped(database_url: str) -> IssuedKey:
    """Bootstrap the (migrated) database a server is about to serve; the platform key."""
    db = Database(database_url)
    try:
        return bootstrap(db, SecretHasher(TEST_ARGON2))
    finally:
        db.dispose()


def serve_env(database_url: str, **extra: str) -> dict[str, str]:
    """The environment of a test server: the test database, KEK and argon2 profile, plus ``extra``."""
    return {
        **os.environ,
        "IDENTITY_DATABASE_URL": database_url,
        "IDENTITY_KEK": TEST_KEK,
        "IDENTITY_ARGON2_MEMORY_KIB": str(TEST_ARGON2.memory_kib),
        "IDENTITY_ARGON2_TIME_COST": str(TEST_ARGON2.time_cost),
        "IDENTITY_SHUTDOWN_GRACE": "2",
        "IDENTITY_ARGON2_QUEUE": "64",  # room for the bursts of concurrent creations quota tests fire
        "IDENTITY_METRICS_LISTEN": "",  # servers run side by side: no two on the default metrics port
        **extra,
    }


class ServeProcess:
    """One ``identity serve`` subprocess listening on ``address``, logging to ``log_path``."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        address: str,
        log_path: Path,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self.process = process
        self.address = address
        self.log_path = log_path
        self.credentials = credentials

    def channel(self) -> grpc.Channel:
        """A new channel to the server, over TLS when it was started with client credentials."""
        if self.credentials is None:
            return grpc.insecure_channel(self.address)
        return grpc.secure_channel(self.address, self.credentials)

    @property
    def running(self) -> bool:
        """Whether the process has not exited yet."""
        return self.process.poll() is None

    def log(self, tail: int = 4000) -> str:
        """The last ``tail`` characters of the process's output."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return text[-tail:]

    def log_records(self) -> list[dict[str, Any]]:
        """Every line of the process's output, each parsed as the JSON object it must be."""
        return [json.loads(line) for line in self.log_path.read_text().splitlines()]

    def rpc_pids(self, method: str, code: str = "OK") -> set[int]:
        """The processes that logged a call of ``method`` (its last path segment) ending with ``code``."""
        return {
            record["pid"]
            for record in self.log_records()
            if record["logger"] == "identity.rpc"
            and record["method"].endswith(f"/{method}")
            and record["code"] == code
        }

    def describe(self, tail: int = 4000) -> str:
        """Address, state and the end of the log, for assertion messages."""
        state = "running" if self.running else f"exited with {self.process.returncode}"
        return f"--- identity serve on {self.address} ({state}), {self.log_path}:\n{self.log(tail)}"

    def wait_serving(self, timeout: float = 30) -> None:
        """Wait until health says SERVING; fail at once if the process exits first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.running, f"the server exited before serving\n{self.describe()}"
            with self.channel() as channel:
                try:
                    reply = health_pb2_grpc.HealthStub(channel).Check(
                        health_pb2.HealthCheckRequest(), timeout=1
                    )
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
            time.sleep(0.1)
        raise AssertionError(f"the server did not start serving within {timeout} s\n{self.describe()}")

    def terminate(self, timeout: float = 10) -> int:
        """SIGTERM, wait for the drain, SIGKILL if it does not end in ``timeout``; the exit code."""
        if self.running:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()


@contextmanager
def identity_serve(
    database_url: str,
    log_path: Path,
    *,
    workers: int = 1,
    address: str = "",
    env: Mapping[str, str] | None = None,
    credentials: grpc.ChannelCredentials | None = None,
    flags: Sequence[str] = (),
) -> Iterator[ServeProcess]:
    """Start ``identity serve --workers N --listen ADDRESS`` and stop it when the block ends, however it ends.

    ``env`` adds to the test environment and ``flags`` to the command line; ``credentials`` are
    the client's for a TLS server. The
    block gets the process before it is serving; call :meth:`ServeProcess.wait_serving`.
    """
    address = address or f"127.0.0.1:{free_port()}"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [IDENTITY, "serve", "--workers", str(workers), "--listen", address, *flags],
            env=serve_env(database_url, **(env or {})),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    serving = ServeProcess(process, address, log_path, credentials)
    try:
        yield serving
    finally:
        serving.terminate()
