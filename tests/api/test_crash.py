"""Crash safety: ``identity serve`` killed with SIGKILL in the middle of a burst of key changes.

Every change commits with its audit event, its change-log row (and, for CreateKey, its
idempotency record) in one transaction, so after the kill the database holds each change with
all of them or none; every change a client saw acknowledged is there; and a restarted server
serves what was committed: the keys work, revoked ones stay revoked, quotas hold, and a retried
CreateKey finds the key its first attempt committed.
"""

from __future__ import annotations

import functools
import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask
from sqlalchemy import text

from identity.app.bootstrap import bootstrap
from identity.crypto.hashing import SecretHasher
from identity.store.database import Database
from identity.v1 import (
    authorization_service_pb2,
    authorization_service_pb2_grpc,
    common_pb2,
    key_service_pb2,
)
from tests.conftest import TEST_ARGON2
from tests.helpers import Admin
from tests.servers import ServeProcess, identity_serve
from tests.traffic import OK, attempt, error_outcome

PRINCIPALS = 4
QUOTA = 6  # keys per service account
WRITERS_PER_PRINCIPAL = 3
ACKNOWLEDGED_BEFORE_KILL = 60
ALLOWED, REVOKED = (
    common_pb2.DECISION_REASON_ALLOWED,
    common_pb2.DECISION_REASON_REVOKED_API_KEY,
)  # changes acknowledged before the kill, so it lands mid-burst
QUOTA_EXCEEDED = "RESOURCE_EXHAUSTED QUOTA_EXCEEDED"


@dataclass
class OwnKey:
    """A key one writer made: its id, the secret it last saw, and that secret's version."""

    key_id: str
    api_key: str
    version: int = 1
    revoked: bool = False


@dataclass
class Writer:
    """One client thread changing only keys it made itself, so it knows what each should be."""

    admin: Admin
    org_id: str
    principal_id: str
    keys: list[OwnKey] = field(default_factory=list)
    acknowledged: Counter[str] = field(default_factory=Counter)
    unanswered_creates: list[str] = field(default_factory=list)  # request ids in flight at the kill
    unexpected: list[str] = field(default_factory=list)

    def run(self, killed: threading.Event, seed: int) -> None:
        """Make changes until the server is gone."""
        chooser = random.Random(seed)
        while not killed.is_set():
            active = [k for k in self.keys if not k.revoked]
            change = "create" if len(active) < 2 else chooser.choice(["create", "revoke", "update", "rotate"])
            request_id = uuid.uuid4().hex
            try:
                if change == "create":
                    self._create(request_id)
                else:
                    getattr(self, f"_{change}")(chooser.choice(active))
                self.acknowledged[change] += 1
            except grpc.RpcError as error:
                if killed.is_set():
                    if change == "create":
                        self.unanswered_creates.append(request_id)
                    return
                outcome = error_outcome(error)
                if change == "create" and outcome == QUOTA_EXCEEDED:
                    continue
                self.unexpected.append(f"{change}: {outcome}")
                return

    def create(self, request_id: str) -> key_service_pb2.CreateKeyResponse:
        """CreateKey for this writer's principal with ``request_id``."""
        created: key_service_pb2.CreateKeyResponse = self.admin.keys.CreateKey(
            key_service_pb2.CreateKeyRequest(
                org_id=self.org_id,
                principal_id=self.principal_id,
                display_name="burst",
                scopes=["stock:read"],
                request_id=request_id,
            ),
            metadata=self.admin.metadata,
            timeout=10,
        )
        return created

    def _create(self, request_id: str) -> None:
        created = self.create(request_id)
        self.keys.append(OwnKey(created.key.id, created.api_key))

    def _revoke(self, key: OwnKey) -> None:
        request = key_service_pb2.RevokeKeyRequest(key_id=key.key_id, reason="burst")
        self.admin.keys.RevokeKey(request, metadata=self.admin.metadata, timeout=10)
        key.revoked = True

    def _update(self, key: OwnKey) -> None:
        request = key_service_pb2.UpdateKeyRequest(
            key=key_service_pb2.Key(id=key.key_id, display_name=f"burst {uuid.uuid4().hex[:6]}"),
            update_mask=FieldMask(paths=["display_name"]),
        )
        self.admin.keys.UpdateKey(request, metadata=self.admin.metadata, timeout=10)

    def _rotate(self, key: OwnKey) -> None:
        request = key_service_pb2.RotateKeyRequest(key_id=key.key_id, grace_period=Duration(seconds=0))
        rotated = self.admin.keys.RotateKey(request, metadata=self.admin.metadata, timeout=10)
        key.api_key, key.version = rotated.api_key, key.version + 1


@dataclass(frozen=True)
class Stored:
    """What the database holds after the kill."""

    keys: dict[str, tuple[str, bool, int]]  # key id -> (principal, revoked, secret version)
    changes: Counter[tuple[str, str]]  # (key id, change type) -> rows in the change log
    events: Counter[tuple[str, str]]  # (target, action) -> successful key.* audit events
    requests: dict[str, str]  # CreateKey request id -> key id

    @classmethod
    def read(cls, database_url: str) -> Stored:
        """Read the key tables directly."""
        db = Database(database_url)
        try:
            with db.engine.connect() as connection:
                keys = {
                    row.id: (row.principal_id, row.revoke_time is not None, row.secret_version)
                    for row in connection.execute(
                        text("SELECT id, principal_id, revoke_time, secret_version FROM api_keys")
                    )
                }
                changes = Counter(
                    (row.key_id, row.type)
                    for row in connection.execute(
                        text("SELECT key_id, type FROM key_changes WHERE key_id <> ''")
                    )
                )
                events = Counter(
                    (row.target, row.action)
                    for row in connection.execute(
                        text(
                            "SELECT target, action FROM audit_events"
                            " WHERE outcome = 'success' AND action LIKE 'key.%'"
                        )
                    )
                )
                requests = {
                    row.request_id: row.key_id
                    for row in connection.execute(text("SELECT request_id, key_id FROM create_key_requests"))
                }
        finally:
            db.dispose()
        return cls(keys, changes, events, requests)


def burst_then_kill(serving: ServeProcess, writers: list[Writer]) -> None:
    """Run every writer until enough changes were acknowledged, then SIGKILL the server mid-burst."""
    killed = threading.Event()
    threads = [
        threading.Thread(target=writer.run, args=(killed, seed), name=f"writer-{seed}")
        for seed, writer in enumerate(writers)
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 30
    while sum(sum(w.acknowledged.values()) for w in writers) < ACKNOWLEDGED_BEFORE_KILL:
        assert time.monotonic() < deadline and all(t.is_alive() for t in threads), [
            w.unexpected for w in writers
        ]
        time.sleep(0.01)
    killed.set()
    serving.process.kill()
    serving.process.wait()
    for thread in threads:
        thread.join()


def check_reply(channel: grpc.Channel, api_key: str) -> authorization_service_pb2.CheckResponse:
    """Check ``stock:read`` for ``api_key``."""
    stub = authorization_service_pb2_grpc.AuthorizationServiceStub(channel)
    return stub.Check(
        authorization_service_pb2.CheckRequest(credential=api_key, permissions=["stock:read"]), timeout=10
    )


def test_a_server_killed_mid_burst_leaves_every_change_whole(database_url: str, tmp_path: Path) -> None:
    """Twelve writers change keys until the server is SIGKILLed with changes in flight; then the
    database, read directly, and a restarted server must agree with every acknowledged answer."""
    db = Database(database_url)
    platform = bootstrap(db, SecretHasher(TEST_ARGON2))
    platform_key = platform.api_key
    db.dispose()
    with identity_serve(database_url, tmp_path / "first.log") as serving:
        serving.wait_serving()
        with grpc.insecure_channel(serving.address) as channel:
            admin = Admin(channel, platform_key)
            org_id = admin.create_org("Crash", max_keys_per_service_account=QUOTA).id
            principals = [admin.create_principal(org_id, name=f"robot {i}").id for i in range(PRINCIPALS)]
            writers = [
                Writer(admin, org_id, principal)
                for principal in principals
                for _ in range(WRITERS_PER_PRINCIPAL)
            ]
            burst_then_kill(serving, writers)
        assert serving.process.returncode == -9, serving.describe()
    assert [w.unexpected for w in writers if w.unexpected] == []

    stored = Stored.read(database_url)
    # Each change whole: the key row, its change-log rows and its audit events agree.
    for key_id, (_, revoked, version) in stored.keys.items():
        assert stored.changes[(key_id, "created")] == 1 == stored.events[(key_id, "key.create")], key_id
        assert stored.changes[(key_id, "revoked")] == int(revoked) == stored.events[(key_id, "key.revoke")], (
            key_id
        )
        assert stored.changes[(key_id, "rotated")] == version - 1 == stored.events[(key_id, "key.rotate")], (
            key_id
        )
        assert stored.changes[(key_id, "updated")] == stored.events[(key_id, "key.update")], key_id
    assert {key_id for key_id, _ in stored.changes} <= set(stored.keys), "a change logged for no key"
    assert {target for target, _ in stored.events} <= set(stored.keys), "an event audited for no key"
    # Every key of the burst with its idempotency record (the platform key was made without one).
    assert sorted(stored.requests.values()) == sorted(set(stored.keys) - {platform.key.id})
    # Everything acknowledged is there.
    for writer in writers:
        for key in writer.keys:
            _, revoked, version = stored.keys[key.key_id]
            assert (revoked or not key.revoked) and version >= key.version, key
    unanswered = [r for w in writers for r in w.unanswered_creates]
    acknowledged = sum((w.acknowledged for w in writers), Counter[str]())
    print(
        f"\nkilled after {dict(acknowledged)} acknowledged; the database holds {len(stored.keys)} keys and"
        f" {sum(stored.changes.values())} key changes; {len(unanswered)} CreateKey calls unanswered,"
        f" {sum(r in stored.requests for r in unanswered)} of them committed"
    )
    active = Counter(principal for principal, revoked, _ in stored.keys.values() if not revoked)
    assert max(active[p] for p in principals) <= QUOTA, active

    with identity_serve(database_url, tmp_path / "restarted.log") as serving:
        serving.wait_serving()
        with grpc.insecure_channel(serving.address) as channel:
            admin = Admin(channel, platform_key)
            # The keys made before the kill work, or stay revoked, as the database says.
            for writer in writers:
                for key in writer.keys:
                    _, revoked, version = stored.keys[key.key_id]
                    if version == key.version:  # the writer knows the current secret
                        reply = check_reply(channel, key.api_key)
                        assert reply.reason == (REVOKED if revoked else ALLOWED), key
            # A CreateKey retried after the crash finds the key its first attempt committed.
            for writer in writers:
                writer.admin = admin  # its channel to the killed server is closed
                for request_id in writer.unanswered_creates:
                    if request_id in stored.requests:
                        retried = writer.create(request_id)
                        assert (retried.key.id, retried.api_key) == (stored.requests[request_id], "")
                    else:  # never committed: the retry is a first attempt
                        try:
                            writer.create(request_id)
                        except grpc.RpcError as error:
                            assert error_outcome(error) == QUOTA_EXCEEDED
            # Quotas: each principal takes exactly as many new keys as its quota leaves room for.
            after = Stored.read(database_url)

            def create_for(principal: str) -> str:
                admin.create_key(org_id, principal, ["stock:read"])
                return OK

            for principal in principals:
                room = QUOTA - sum(
                    1 for p, revoked, _ in after.keys.values() if p == principal and not revoked
                )
                outcomes = [attempt(functools.partial(create_for, principal)) for _ in range(room + 1)]
                assert outcomes == [OK] * room + [QUOTA_EXCEEDED], principal
        assert serving.terminate() == 0, serving.describe()
