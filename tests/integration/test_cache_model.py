"""The caches never change an answer: two replicas, each with its own caches, against a model.

A Hypothesis state machine creates, rotates, revokes, deletes and narrows keys, deactivates
and reactivates the organization, disables and enables principals and mints tokens, each on a
replica picked at random; then it checks every credential it ever saw, on both replicas. After
each change the other replica is given the invalidation bound to catch up with the change log,
and from then on every decision must be exactly the model's.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TypeAlias

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from identity.app.bootstrap import bootstrap
from identity.cache.states import FRESHNESS_SECONDS
from identity.config import Settings
from identity.crypto.hashing import SecretHasher
from identity.server import IdentityServer, build_server
from identity.store.repository import Repository
from identity.v1 import (
    authorization_service_pb2,
    authorization_service_pb2_grpc,
    common_pb2,
    key_service_pb2,
    organization_service_pb2,
    principal_service_pb2,
    token_service_pb2,
    token_service_pb2_grpc,
)
from tests.helpers import Admin

PERMISSIONS = ("stock:read", "stock:write", "bills:read")
LONG_GRACE = 3600  # seconds: long enough never to end during a run
R = common_pb2
Reason: TypeAlias = common_pb2.DecisionReason.ValueType


@dataclass
class Replica:
    """One in-process server and stubs that call it."""

    server: IdentityServer
    channel: grpc.Channel
    admin: Admin
    checks: authorization_service_pb2_grpc.AuthorizationServiceStub
    tokens: token_service_pb2_grpc.TokenServiceStub


@dataclass
class ModelKey:
    """What the model knows of a key: its secrets by version and its state."""

    id: str
    principal: int
    scopes: frozenset[str]
    secrets: dict[int, str]
    version: int = 1
    previous_in_grace: bool = False
    revoked: bool = False
    deleted: bool = False

    def secret_works(self, version: int) -> bool:
        return version == self.version or (version == self.version - 1 and self.previous_in_grace)


@dataclass
class ModelToken:
    """A token the model saw minted: its key, the secret version that minted it, its scopes."""

    token: str
    key: ModelKey
    version: int
    scopes: frozenset[str]


@dataclass
class World:
    """The replicas every run of the state machine shares, and how long catching up took."""

    replicas: list[Replica]
    catch_up_seconds: list[float] = field(default_factory=list)


def expected_for_key(model: CacheModel, key: ModelKey, version: int, permission: str) -> Reason:
    if key.deleted or not key.secret_works(version):
        return R.DECISION_REASON_INVALID_API_KEY
    if key.revoked:
        return R.DECISION_REASON_REVOKED_API_KEY
    return model.common_reason(key, key.scopes, permission)


def expected_for_token(model: CacheModel, token: ModelToken, permission: str) -> Reason:
    key = token.key
    if key.deleted or key.revoked or not key.secret_works(token.version):
        return R.DECISION_REASON_INVALID_TOKEN
    return model.common_reason(key, token.scopes, permission)


class CacheModel(RuleBasedStateMachine):
    """Changes on random replicas; every credential checked on both replicas against the model."""

    world: World

    def __init__(self) -> None:
        super().__init__()
        self.keys: list[ModelKey] = []
        self.tokens: list[ModelToken] = []
        self.org_id = ""
        self.principal_ids: list[str] = []
        self.org_active = True
        self.principal_active = [True, True]

    # Helpers

    def common_reason(self, key: ModelKey, scopes: frozenset[str], permission: str) -> Reason:
        if not self.org_active:
            return R.DECISION_REASON_INACTIVE_ORGANIZATION
        if not self.principal_active[key.principal]:
            return R.DECISION_REASON_DISABLED_PRINCIPAL
        if permission not in scopes:
            return R.DECISION_REASON_INSUFFICIENT_SCOPE
        return R.DECISION_REASON_ALLOWED

    def changed(self, made_on: int) -> None:
        """Give the other replica the invalidation bound to apply what ``made_on`` just changed."""
        other = self.world.replicas[1 - made_on].server
        with self.world.replicas[made_on].server.db.read() as session:
            head = Repository(session).head_cursor()
        started = time.monotonic()
        while other.feed.cursor < head:
            waited = time.monotonic() - started
            assert waited <= FRESHNESS_SECONDS, f"the other replica lagged {waited:.2f} s behind the log"
            time.sleep(0.005)
        self.world.catch_up_seconds.append(time.monotonic() - started)

    def active_keys(self) -> list[ModelKey]:
        return [k for k in self.keys if not k.deleted and not k.revoked]

    # Rules

    @initialize(replica=st.integers(0, 1), principal=st.integers(0, 1))
    def new_organization_and_first_key(self, replica: int, principal: int) -> None:
        # Each run gets an organization of its own: runs share the replicas and their database.
        admin = self.world.replicas[replica].admin
        self.org_id = admin.create_org("Model", max_keys_per_service_account=50).id
        self.principal_ids = [admin.create_principal(self.org_id, name=f"robot {i}").id for i in range(2)]
        self.create_key(replica, principal, frozenset(PERMISSIONS[:2]))

    @rule(
        replica=st.integers(0, 1),
        principal=st.integers(0, 1),
        scopes=st.frozensets(st.sampled_from(PERMISSIONS), min_size=1),
    )
    @precondition(lambda self: len(self.keys) < 6 and self.org_active)
    def create_key(self, replica: int, principal: int, scopes: frozenset[str]) -> None:
        if not self.principal_active[principal]:
            return  # a disabled principal gets no new key (FAILED_PRECONDITION, tested elsewhere)
        admin = self.world.replicas[replica].admin
        created = admin.create_key(
            self.org_id, self.principal_ids[principal], sorted(scopes), display_name="model"
        )
        self.keys.append(ModelKey(created.key.id, principal, scopes, {1: created.api_key}))
        self.changed(replica)

    @rule(replica=st.integers(0, 1), pick=st.integers(0, 100), grace=st.sampled_from([0, LONG_GRACE]))
    @precondition(lambda self: bool(self.active_keys()))
    def rotate(self, replica: int, pick: int, grace: int) -> None:
        key = self.active_keys()[pick % len(self.active_keys())]
        admin = self.world.replicas[replica].admin
        reply = admin.keys.RotateKey(
            key_service_pb2.RotateKeyRequest(key_id=key.id, grace_period=Duration(seconds=grace)),
            metadata=admin.metadata,
        )
        key.version += 1
        key.secrets[key.version] = reply.api_key
        key.previous_in_grace = grace > 0
        self.changed(replica)

    @rule(replica=st.integers(0, 1), pick=st.integers(0, 100))
    @precondition(lambda self: bool(self.active_keys()))
    def revoke(self, replica: int, pick: int) -> None:
        key = self.active_keys()[pick % len(self.active_keys())]
        admin = self.world.replicas[replica].admin
        admin.keys.RevokeKey(key_service_pb2.RevokeKeyRequest(key_id=key.id), metadata=admin.metadata)
        key.revoked = True
        self.changed(replica)

    @rule(replica=st.integers(0, 1), pick=st.integers(0, 100))
    @precondition(lambda self: any(not k.deleted for k in self.keys))
    def delete(self, replica: int, pick: int) -> None:
        alive = [k for k in self.keys if not k.deleted]
        key = alive[pick % len(alive)]
        admin = self.world.replicas[replica].admin
        admin.keys.DeleteKey(key_service_pb2.DeleteKeyRequest(key_id=key.id), metadata=admin.metadata)
        key.deleted = True
        self.changed(replica)

    @rule(
        replica=st.integers(0, 1),
        pick=st.integers(0, 100),
        scopes=st.frozensets(st.sampled_from(PERMISSIONS), min_size=1),
    )
    @precondition(lambda self: bool(self.active_keys()))
    def update_scopes(self, replica: int, pick: int, scopes: frozenset[str]) -> None:
        key = self.active_keys()[pick % len(self.active_keys())]
        admin = self.world.replicas[replica].admin
        admin.keys.UpdateKey(
            key_service_pb2.UpdateKeyRequest(
                key=key_service_pb2.Key(id=key.id, scopes=sorted(scopes)),
                update_mask=FieldMask(paths=["scopes"]),
            ),
            metadata=admin.metadata,
        )
        key.scopes = scopes
        self.changed(replica)

    @rule(replica=st.integers(0, 1))
    def toggle_organization(self, replica: int) -> None:
        self.org_active = not self.org_active
        state = (
            organization_service_pb2.ORGANIZATION_STATE_ACTIVE
            if self.org_active
            else organization_service_pb2.ORGANIZATION_STATE_INACTIVE
        )
        self.world.replicas[replica].admin.set_organization_state(self.org_id, state)
        self.changed(replica)

    @rule(replica=st.integers(0, 1), principal=st.integers(0, 1))
    def toggle_principal(self, replica: int, principal: int) -> None:
        self.principal_active[principal] = not self.principal_active[principal]
        state = (
            principal_service_pb2.PRINCIPAL_STATE_ACTIVE
            if self.principal_active[principal]
            else principal_service_pb2.PRINCIPAL_STATE_DISABLED
        )
        self.world.replicas[replica].admin.set_principal_state(self.principal_ids[principal], state)
        self.changed(replica)

    @rule(replica=st.integers(0, 1), pick=st.integers(0, 100))
    @precondition(lambda self: bool(self.keys))
    def exchange(self, replica: int, pick: int) -> None:
        key = self.keys[pick % len(self.keys)]
        version = max(key.secrets)
        expected = expected_for_key(self, key, version, next(iter(key.scopes)))
        request = token_service_pb2.ExchangeApiKeyRequest(
            api_key=key.secrets[version], lifetime=Duration(seconds=3600)
        )
        try:
            reply = self.world.replicas[replica].tokens.ExchangeApiKey(request)
        except grpc.RpcError as error:
            assert expected != R.DECISION_REASON_ALLOWED, f"exchange refused: {error.details()}"
            return
        assert expected == R.DECISION_REASON_ALLOWED, "the exchange of a key that must not work succeeded"
        self.tokens.append(ModelToken(reply.access_token, key, version, key.scopes))

    # What every step must leave true

    @invariant()
    def every_credential_decides_as_the_model_says(self) -> None:
        for permission in PERMISSIONS:
            asked: list[tuple[str, Reason, str]] = []
            for key in self.keys:
                for version, secret in key.secrets.items():
                    wanted = expected_for_key(self, key, version, permission)
                    asked.append((secret, wanted, f"key {key.id} v{version}"))
            for token in self.tokens:
                wanted = expected_for_token(self, token, permission)
                asked.append((token.token, wanted, f"token of {token.key.id} v{token.version}"))
            for index, replica in enumerate(self.world.replicas):
                for credential, wanted, name in asked:
                    reply = replica.checks.Check(
                        authorization_service_pb2.CheckRequest(
                            credential=credential, permissions=[permission]
                        )
                    )
                    assert reply.reason == wanted, (
                        f"replica {index}: {name} asking {permission}: "
                        f"{R.DecisionReason.Name(reply.reason)}, the model says {R.DecisionReason.Name(wanted)}"
                    )


@pytest.fixture
def world(database_url: str, settings: Settings) -> Iterator[World]:
    replicas: list[Replica] = []
    try:
        for index in range(2):
            server, port = build_server(settings)
            if index == 0:
                platform_key = bootstrap(server.db, SecretHasher(settings.argon2)).api_key
            server.start()
            channel = grpc.insecure_channel(f"127.0.0.1:{port}")
            replicas.append(
                Replica(
                    server,
                    channel,
                    Admin(channel, platform_key),
                    authorization_service_pb2_grpc.AuthorizationServiceStub(channel),
                    token_service_pb2_grpc.TokenServiceStub(channel),
                )
            )
        yield World(replicas)
    finally:
        for replica in replicas:
            replica.channel.close()
            replica.server.stop(0)


# Every wrong secret is presented again and again here: lift the failed-attempt throttle
# (tested on its own) so that each answer is the credential's own.
@pytest.mark.settings(failed_attempts_per_key=1_000_000, failed_attempts_per_peer=1_000_000)
def test_caches_agree_with_the_model_on_both_replicas(world: World) -> None:
    CacheModel.world = world
    run_state_machine_as_test(
        CacheModel,
        settings=settings(
            max_examples=12,
            stateful_step_count=12,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
    # The other replica caught up well within the bound after every change.
    assert max(world.catch_up_seconds) < FRESHNESS_SECONDS
