"""``identity serve --workers N``: several processes share one port and drain together on SIGTERM.

The drain: health turns NOT_SERVING at once, calls in flight finish, new calls are refused,
every worker exits within the grace period (plus a second), and what the workers had batched
for the database (audit events of Checks and exchanges, keys' last-used times) is written
before they exit.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import Future
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import text

from identity.store.database import Database
from identity.v1 import (
    authorization_service_pb2,
    authorization_service_pb2_grpc,
    key_service_pb2,
    token_service_pb2,
    token_service_pb2_grpc,
)
from tests.helpers import Admin
from tests.servers import ServeProcess, bootstrapped, identity_serve

GRACE = 5.0
# An argon2id profile that makes each CreateKey, and each first exchange of a key it made, take
# about 0.3 s here (the platform key, hashed by the test's cheap profile, stays fast).
SLOW_ARGON2 = {"IDENTITY_ARGON2_MEMORY_KIB": str(64 * 1024), "IDENTITY_ARGON2_TIME_COST": "4"}
DENIED_CHECKS = 5  # per worker, just before the signal
NOT_SERVING_WITHIN = 0.5


def last_whoami_pid(serving: ServeProcess) -> str:
    """The worker that logged the newest WhoAmI answer."""
    answers = [
        r
        for r in serving.log_records()
        if r["logger"] == "identity.rpc" and r["method"].endswith("/WhoAmI") and r["code"] == "OK"
    ]
    return str(answers[-1]["pid"])


def channel_per_worker(serving: ServeProcess, key: str, workers: int) -> dict[str, grpc.Channel]:
    """A channel (a connection of its own) to each worker, by pid: new connections until each was hit."""
    channels: dict[str, grpc.Channel] = {}
    deadline = time.monotonic() + 30
    while len(channels) < workers and time.monotonic() < deadline:
        # A new connection each time: the kernel spreads them over the workers.
        channel = grpc.insecure_channel(serving.address, options=[("grpc.use_local_subchannel_pool", 1)])
        stub = authorization_service_pb2_grpc.AuthorizationServiceStub(channel)
        assert stub.WhoAmI(authorization_service_pb2.WhoAmIRequest(), metadata=(("x-api-key", key),)).platform
        pid = last_whoami_pid(serving)  # logged before the answer was sent
        if pid in channels:
            channel.close()
        else:
            channels[pid] = channel
    assert len(channels) == workers, serving.describe()
    return channels


def watch_health(channel: grpc.Channel) -> tuple[list[tuple[float, str]], grpc.Future]:
    """Follow the worker's health: every status it sends, with when it arrived, and the stream to cancel."""
    seen: list[tuple[float, str]] = []
    stream = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=60)

    def follow() -> None:
        try:
            for reply in stream:
                seen.append(
                    (time.monotonic(), health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
                )
        except grpc.RpcError:
            pass  # cancelled by the test, or ended by the server

    threading.Thread(target=follow, name="health-watch", daemon=True).start()
    return seen, stream


def statuses_until(seen: list[tuple[float, str]], count: int, timeout: float) -> None:
    """Wait until ``seen`` holds ``count`` statuses (or ``timeout`` passes)."""
    deadline = time.monotonic() + timeout
    while len(seen) < count and time.monotonic() < deadline:
        time.sleep(0.005)


class Tenant:
    """An organization whose keys are hashed with the server's slow profile, and calls that use them."""

    def __init__(self, channel: grpc.Channel, platform_key: str) -> None:
        self.admin = Admin(channel, platform_key)
        self.org_id = self.admin.create_org("Drain", max_keys_per_service_account=20).id
        self.principal_id = self.admin.create_principal(self.org_id).id

    def create_key(self, channel: grpc.Channel) -> Future[key_service_pb2.CreateKeyResponse]:
        """A CreateKey (slow: it hashes) sent on ``channel``."""
        stub = Admin(channel, self.admin.api_key).keys
        request = key_service_pb2.CreateKeyRequest(
            org_id=self.org_id, principal_id=self.principal_id, display_name="drain", scopes=["stock:read"]
        )
        return stub.CreateKey.future(request, metadata=self.admin.metadata, timeout=30)

    @staticmethod
    def exchange(channel: grpc.Channel, api_key: str) -> Future[token_service_pb2.ExchangeApiKeyResponse]:
        """A v2 exchange sent on ``channel`` (slow the first time the worker sees the key)."""
        stub = token_service_pb2_grpc.TokenServiceStub(channel)
        return stub.ExchangeApiKey.future(
            token_service_pb2.ExchangeApiKeyRequest(api_key=api_key), timeout=30
        )

    @staticmethod
    def check(channel: grpc.Channel, token: str, permission: str) -> bool:
        """Whether ``token`` may ``permission``, asked on ``channel``."""
        stub = authorization_service_pb2_grpc.AuthorizationServiceStub(channel)
        request = authorization_service_pb2.CheckRequest(credential=token, permissions=[permission])
        return bool(stub.Check(request, timeout=30).allowed)


def test_two_workers_share_the_port_and_drain_together(database_url: str, tmp_path: Path) -> None:
    """Both workers serve; on SIGTERM both drain as the module says, within ``GRACE`` + 1 s."""
    key = bootstrapped(database_url).api_key
    env = {**SLOW_ARGON2, "IDENTITY_SHUTDOWN_GRACE": str(GRACE)}
    with identity_serve(database_url, tmp_path / "serve.log", workers=2, env=env) as serving:
        serving.wait_serving()
        channels = channel_per_worker(serving, key, workers=2)
        a, b = channels
        tenant = Tenant(channels[a], key)
        made = {pid: tenant.create_key(channel) for pid, channel in channels.items()}  # one hash each
        fresh = {pid: call.result().api_key for pid, call in made.items()}
        # A token whose Checks are denied (and so audited) without any argon2id work; only worker
        # a has verified its key, so each worker will exchange a key it never verified.
        token = tenant.exchange(channels[a], fresh[a]).result().access_token
        never_verified = {a: fresh[b], b: fresh[a]}
        watches = {pid: watch_health(channel) for pid, channel in channels.items()}
        for seen, _ in watches.values():
            statuses_until(seen, 1, timeout=10)
            assert [status for _, status in seen] == ["SERVING"]

        # Denials batched for audit on each worker, slow calls in flight on each, then the signal.
        for channel in channels.values():
            for _ in range(DENIED_CHECKS):
                assert not tenant.check(channel, token, "stock:write")
        # Each worker hashes one at a time: the exchange after the CreateKey, so it ends the drain.
        in_flight = [tenant.create_key(channel) for channel in channels.values()]
        in_flight_exchanges = [
            tenant.exchange(channels[pid], api_key) for pid, api_key in never_verified.items()
        ]
        finished: list[float] = []
        calls: list[grpc.Future] = [*in_flight, *in_flight_exchanges]
        for call in calls:
            call.add_done_callback(lambda _: finished.append(time.monotonic()))
        time.sleep(0.15)  # the calls reached the workers, whose first hash takes longer than this
        signalled = time.monotonic()
        serving.process.send_signal(signal.SIGTERM)

        for pid, (seen, stream) in watches.items():
            statuses_until(seen, 2, timeout=NOT_SERVING_WITHIN)
            assert [status for _, status in seen][:2] == ["SERVING", "NOT_SERVING"], (pid, seen)
            assert seen[1][0] - signalled <= NOT_SERVING_WITHIN, (pid, seen)
            stream.cancel()  # a watcher would otherwise hold the worker for the whole grace
        # New calls are refused, both on a connection made before the signal and on a new one.
        refused = []
        with grpc.insecure_channel(serving.address) as new_channel:
            for channel in (*channels.values(), new_channel):
                try:
                    Tenant.check(channel, token, "stock:read")
                    refused.append("OK")
                except grpc.RpcError as error:
                    refused.append(f"{error.code().name}: {error.details()}")
        assert [outcome.split(":")[0] for outcome in refused] == ["UNAVAILABLE"] * 3, refused

        created = [call.result().key.id for call in in_flight]
        exchanged = [call.result().key_id for call in in_flight_exchanges]
        code = serving.process.wait(timeout=GRACE + 5)
        stopped = time.monotonic() - signalled
        assert code == 0 and stopped <= GRACE + 1.0, (stopped, serving.describe())
        # The calls were still running when the signal came, and finished during the drain.
        assert len(finished) == len(in_flight) + len(in_flight_exchanges)
        assert signalled < min(finished) and max(finished) - signalled < GRACE, (finished, signalled)
        for pid in channels:
            assert not os.path.exists(f"/proc/{pid}"), f"worker {pid} outlived the server"
    print(
        f"\nNOT_SERVING after {[round(seen[1][0] - signalled, 3) for seen, _ in watches.values()]} s;"
        f" in-flight calls done after {sorted(round(t - signalled, 2) for t in finished)} s;"
        f" all workers gone after {stopped:.2f} s; new calls: {refused}"
    )
    drained = [r for r in serving.log_records() if r["message"].startswith("signal 15: draining")]
    assert len(drained) == 2, serving.describe()
    assert_flushed(database_url, created, exchanged, denied=DENIED_CHECKS * len(channels))


def assert_flushed(database_url: str, created: list[str], exchanged: list[str], denied: int) -> None:
    """What the drained workers wrote: the keys they made, and what they had batched."""
    db = Database(database_url)
    try:
        with db.engine.connect() as connection:

            def column(query: str) -> list[str]:
                return sorted(row[0] for row in connection.execute(text(query)))

            assert set(created) <= set(column("SELECT id FROM api_keys"))
            assert set(created) <= set(column("SELECT target FROM audit_events WHERE action = 'key.create'"))
            assert set(exchanged) <= set(
                column(
                    "SELECT target FROM audit_events WHERE action = 'token.exchange' AND outcome = 'success'"
                )
            )
            assert set(exchanged) <= set(column("SELECT id FROM api_keys WHERE last_used_time IS NOT NULL"))
            denials = column(
                "SELECT reason FROM audit_events WHERE action = 'authz.check' AND outcome = 'denied'"
            )
            assert denials == ["INSUFFICIENT_SCOPE"] * denied
    finally:
        db.dispose()


def test_workers_drain_and_exit_when_their_supervisor_is_killed(database_url: str, tmp_path: Path) -> None:
    """SIGKILL leaves the supervisor no time to forward anything: each worker sees its pipe close."""
    key = bootstrapped(database_url).api_key
    env = {"IDENTITY_SHUTDOWN_GRACE": str(GRACE)}
    with identity_serve(database_url, tmp_path / "serve.log", workers=2, env=env) as serving:
        serving.wait_serving()
        pids = [int(pid) for pid in channel_per_worker(serving, key, workers=2)]
        serving.process.kill()
        serving.process.wait()
        deadline = time.monotonic() + GRACE + 1
        try:
            while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not any(alive(pid) for pid in pids), serving.describe()
        finally:
            for pid in filter(alive, pids):
                os.kill(pid, signal.SIGKILL)  # leave no orphan serving after a failure


def alive(pid: int) -> bool:
    """Whether ``pid`` is a process that has not exited (Linux: read from /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(") ", 1)[1][0] not in "ZX"  # the state field: a zombie has exited


def worker_cores(pid: int) -> set[frozenset[int]]:
    """The core sets the threads of process ``pid`` may run on (one set when all agree)."""
    return {frozenset(os.sched_getaffinity(int(task.name))) for task in Path(f"/proc/{pid}/task").iterdir()}


def test_pinned_workers_each_run_every_thread_on_a_core_of_their_own(
    database_url: str, tmp_path: Path
) -> None:
    """``--pin-workers``: worker i and all its threads on the i-th usable core; both still serve."""
    key = bootstrapped(database_url).api_key
    cores = sorted(os.sched_getaffinity(0))
    with identity_serve(database_url, tmp_path / "serve.log", workers=2, flags=["--pin-workers"]) as serving:
        serving.wait_serving()
        channels = channel_per_worker(serving, key, workers=2)
        pinned = [worker_cores(int(pid)) for pid in channels]
        assert all(len(sets) == 1 for sets in pinned), pinned  # every thread of a worker alike
        assert sorted(sorted(sets.pop()) for sets in pinned) == sorted([[cores[0]], [cores[1 % len(cores)]]])
        assert worker_cores(serving.process.pid) == {frozenset(cores)}  # the supervisor is not pinned
