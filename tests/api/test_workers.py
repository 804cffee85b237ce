"""``identity serve --workers N``: several processes share one port and stop together."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from identity.app.bootstrap import bootstrap
from identity.crypto.hashing import SecretHasher
from identity.store.database import Database
from identity.v1 import authorization_service_pb2, authorization_service_pb2_grpc
from tests.conftest import TEST_ARGON2, TEST_KEK

IDENTITY = str(Path(sys.executable).parent / "identity")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_serving(address: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        with grpc.insecure_channel(address) as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
        time.sleep(0.2)
    raise AssertionError("the workers did not start serving")


def serving_pids(log_path: Path) -> set[str]:
    """The worker processes that logged a WhoAmI answer."""
    return set(re.findall(r"INFO (\d+) identity\.rpc .*WhoAmI code=OK", log_path.read_text()))


def test_two_workers_share_the_port_and_drain_together(database_url: str, tmp_path: Path) -> None:
    db = Database(database_url)
    db.migrate()
    key = bootstrap(db, SecretHasher(TEST_ARGON2)).api_key
    db.dispose()
    address = f"127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "IDENTITY_DATABASE_URL": database_url,
        "IDENTITY_KEK": TEST_KEK,
        "IDENTITY_ARGON2_MEMORY_KIB": str(TEST_ARGON2.memory_kib),
        "IDENTITY_ARGON2_TIME_COST": str(TEST_ARGON2.time_cost),
        "IDENTITY_SHUTDOWN_GRACE": "2",
    }
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log:
        serving = subprocess.Popen(
            [IDENTITY, "serve", "--workers", "2", "--listen", address], env=env, stderr=log, stdout=log
        )
        try:
            wait_serving(address, time.monotonic() + 30)
            # A new connection each time: the kernel spreads them over the workers that are up.
            deadline = time.monotonic() + 30
            while len(serving_pids(log_path)) < 2 and time.monotonic() < deadline:
                with grpc.insecure_channel(
                    address, options=[("grpc.use_local_subchannel_pool", 1)]
                ) as channel:
                    stub = authorization_service_pb2_grpc.AuthorizationServiceStub(channel)
                    me = stub.WhoAmI(
                        authorization_service_pb2.WhoAmIRequest(), metadata=(("x-api-key", key),)
                    )
                    assert me.platform
            started = time.monotonic()
            serving.send_signal(signal.SIGTERM)
            assert serving.wait(timeout=10) == 0
            assert time.monotonic() - started <= 2 + 1
        finally:
            if serving.poll() is None:
                serving.kill()
    text = log_path.read_text()
    assert len(serving_pids(log_path)) == 2, text[-2000:]
    assert len(re.findall(r"signal 15: draining", text)) == 2
