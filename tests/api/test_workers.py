"""``identity serve --workers N``: several processes share one port and stop together."""

from __future__ import annotations

import re
import time
from pathlib import Path

import grpc

from identity.app.bootstrap import bootstrap
from identity.crypto.hashing import SecretHasher
from identity.store.database import Database
from identity.v1 import authorization_service_pb2, authorization_service_pb2_grpc
from tests.conftest import TEST_ARGON2
from tests.servers import identity_serve


def serving_pids(log_path: Path) -> set[str]:
    """The worker processes that logged a WhoAmI answer."""
    return set(re.findall(r"INFO (\d+) identity\.rpc .*WhoAmI code=OK", log_path.read_text()))


def test_two_workers_share_the_port_and_drain_together(database_url: str, tmp_path: Path) -> None:
    db = Database(database_url)
    db.migrate()
    key = bootstrap(db, SecretHasher(TEST_ARGON2)).api_key
    db.dispose()
    with identity_serve(database_url, tmp_path / "serve.log", workers=2) as serving:
        serving.wait_serving()
        # A new connection each time: the kernel spreads them over the workers that are up.
        deadline = time.monotonic() + 30
        while len(serving_pids(serving.log_path)) < 2 and time.monotonic() < deadline:
            with grpc.insecure_channel(
                serving.address, options=[("grpc.use_local_subchannel_pool", 1)]
            ) as channel:
                stub = authorization_service_pb2_grpc.AuthorizationServiceStub(channel)
                me = stub.WhoAmI(authorization_service_pb2.WhoAmIRequest(), metadata=(("x-api-key", key),))
                assert me.platform
        started = time.monotonic()
        assert serving.terminate(timeout=10) == 0, serving.describe()
        assert time.monotonic() - started <= 2 + 1
    text = serving.log(tail=10**7)
    assert len(serving_pids(serving.log_path)) == 2, text[-2000:]
    assert len(re.findall(r"signal 15: draining", text)) == 2
