"""Load: 10,000 mixed calls, 100 at a time, against ``identity serve --workers 2``.

Traffic is mostly Checks and exchanges, as in production, with key creations and revocations
among them. 100 virtual clients (asyncio tasks over ten connections) each change only keys they
made themselves, so every answer is known in advance: an allow, the denial asked for, or, for
a CreateKey whose principal is full (five clients share each one), QUOTA_EXCEEDED. Anything
else is an error. RATE_LIMITED cannot be right here: no secret is ever wrong (so nothing is
throttled), and each worker's argon2id queue is sized to the whole concurrency, so a full pool
would be a bug (the refusal of a full pool is tested in test_hot_path). Afterwards, with the
server drained, the database must agree with what the clients saw: no principal above its
quota, every key with its creation event, and as many success and refusal events of each kind
as there were answers.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from sqlalchemy import text

from identity.app.bootstrap import bootstrap
from identity.crypto.hashing import SecretHasher
from identity.store.database import Database
from identity.v1 import (
    authorization_service_pb2,
    authorization_service_pb2_grpc,
    common_pb2,
    key_service_pb2,
    key_service_pb2_grpc,
    token_service_pb2,
    token_service_pb2_grpc,
)
from tests.conftest import TEST_ARGON2
from tests.helpers import Admin, auth
from tests.servers import identity_serve
from tests.traffic import OK, error_outcome

CALLS = 10_000
CONCURRENCY = 100
CONNECTIONS = 10
PRINCIPALS = 20  # in the churning organization, five clients each
QUOTA = 5
STEADY_KEYS = 10  # never revoked, shared by every client
MIX = {"check key": 45, "check token": 15, "exchange": 20, "denied check": 5, "create": 10, "revoke": 5}
QUOTA_EXCEEDED = "RESOURCE_EXHAUSTED QUOTA_EXCEEDED"
INSUFFICIENT_SCOPE = "DENIED INSUFFICIENT_SCOPE"
EXPECTED = {"create": {OK, QUOTA_EXCEEDED}, "denied check": {INSUFFICIENT_SCOPE}}


@dataclass
class Stubs:
    """Stubs over one connection, calling as the platform key where a caller is needed."""

    checks: authorization_service_pb2_grpc.AuthorizationServiceStub
    tokens: token_service_pb2_grpc.TokenServiceStub
    keys: key_service_pb2_grpc.KeyServiceStub
    metadata: tuple[tuple[str, str], ...]


@dataclass
class Client:
    """One virtual client: the keys it made (id -> secret) and tokens it got for them."""

    number: int
    stubs: Stubs
    principal_id: str
    org_id: str
    steady: list[tuple[str, str]]  # (key, token) shared by every client
    keys: dict[str, str] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)

    async def call(self, operation: str, chooser: random.Random) -> str:
        """Make one call of ``operation``; its outcome."""
        try:
            return await getattr(self, "_" + operation.replace(" ", "_"))(chooser)
        except grpc.RpcError as error:
            return error_outcome(error)

    def _key(self, chooser: random.Random) -> tuple[str, str]:
        """(key id or "", secret): one of its own keys or a steady one."""
        if self.keys and chooser.random() < 0.5:
            return chooser.choice(list(self.keys.items()))
        return "", chooser.choice(self.steady)[0]

    async def _check(self, credential: str, permission: str) -> str:
        request = authorization_service_pb2.CheckRequest(credential=credential, permissions=[permission])
        reply = await self.stubs.checks.Check(request, timeout=30)
        if reply.allowed:
            return OK
        return "DENIED " + common_pb2.DecisionReason.Name(reply.reason).removeprefix("DECISION_REASON_")

    async def _check_key(self, chooser: random.Random) -> str:
        return await self._check(self._key(chooser)[1], "stock:read")

    async def _check_token(self, chooser: random.Random) -> str:
        tokens = list(self.tokens.values()) or [token for _, token in self.steady]
        return await self._check(chooser.choice(tokens), "stock:read")

    async def _denied_check(self, chooser: random.Random) -> str:
        return await self._check(chooser.choice(self.steady)[0], "stock:write")

    async def _exchange(self, chooser: random.Random) -> str:
        key_id, api_key = self._key(chooser)
        reply = await self.stubs.tokens.ExchangeApiKey(
            token_service_pb2.ExchangeApiKeyRequest(api_key=api_key), timeout=30
        )
        if key_id:
            self.tokens[key_id] = reply.access_token
        return OK

    async def _create(self, _: random.Random) -> str:
        request = key_service_pb2.CreateKeyRequest(
            org_id=self.org_id, principal_id=self.principal_id, display_name="load", scopes=["stock:read"]
        )
        created = await self.stubs.keys.CreateKey(request, metadata=self.stubs.metadata, timeout=30)
        self.keys[created.key.id] = created.api_key
        return OK

    async def _revoke(self, chooser: random.Random) -> str:
        key_id = chooser.choice(list(self.keys))
        request = key_service_pb2.RevokeKeyRequest(key_id=key_id, reason="load")
        await self.stubs.keys.RevokeKey(request, metadata=self.stubs.metadata, timeout=30)
        del self.keys[key_id]  # never used again, so no answer depends on how fast revocations spread
        self.tokens.pop(key_id, None)
        return OK


async def drive(
    address: str, platform_key: str, org_id: str, principals: list[str], steady: list[tuple[str, str]]
) -> tuple[Counter[tuple[str, str]], dict[str, list[float]]]:
    """Run ``CALLS`` calls from ``CONCURRENCY`` clients; count (operation, outcome), time each operation."""
    channels = [
        grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(CONNECTIONS)
    ]
    counted: Counter[tuple[str, str]] = Counter()
    seconds: dict[str, list[float]] = {operation: [] for operation in MIX}
    numbers = itertools.count()
    operations, weights = list(MIX), list(MIX.values())

    async def run(client: Client) -> None:
        chooser = random.Random(client.number)
        while next(numbers) < CALLS:
            operation = chooser.choices(operations, weights)[0]
            if operation == "revoke" and not client.keys:
                operation = "create"
            started = time.monotonic()
            outcome = await client.call(operation, chooser)
            counted[(operation, outcome)] += 1
            seconds[operation].append(time.monotonic() - started)

    clients = [
        Client(
            number,
            Stubs(
                authorization_service_pb2_grpc.AuthorizationServiceStub(channel),
                token_service_pb2_grpc.TokenServiceStub(channel),
                key_service_pb2_grpc.KeyServiceStub(channel),
                auth(platform_key),
            ),
            principals[number % len(principals)],
            org_id,
            steady,
        )
        for number, channel in zip(range(CONCURRENCY), itertools.cycle(channels), strict=False)
    ]
    try:
        await asyncio.gather(*(run(client) for client in clients))
    finally:
        for channel in channels:
            await channel.close()
    return counted, seconds


def test_ten_thousand_mixed_calls(database_url: str, tmp_path: Path) -> None:
    """Every answer is one its client expected, and the drained server's database agrees with them."""
    db = Database(database_url)
    platform_key = bootstrap(db, SecretHasher(TEST_ARGON2)).api_key
    db.dispose()
    env = {"IDENTITY_ARGON2_QUEUE": str(CONCURRENCY)}
    with identity_serve(database_url, tmp_path / "serve.log", workers=2, env=env) as serving:
        serving.wait_serving()
        with grpc.insecure_channel(serving.address) as channel:
            admin = Admin(channel, platform_key)
            org_id = admin.create_org("Churn", max_keys_per_service_account=QUOTA).id
            principals = [admin.create_principal(org_id, name=f"robot {i}").id for i in range(PRINCIPALS)]
            steady_org = admin.create_org("Steady", max_keys_per_service_account=STEADY_KEYS).id
            steady_principal = admin.create_principal(steady_org).id
            tokens = token_service_pb2_grpc.TokenServiceStub(channel)
            steady = []
            for _ in range(STEADY_KEYS):
                api_key = admin.create_key(steady_org, steady_principal, ["stock:read"]).api_key
                exchanged = tokens.ExchangeApiKey(token_service_pb2.ExchangeApiKeyRequest(api_key=api_key))
                steady.append((api_key, exchanged.access_token))
        started = time.monotonic()
        counted, seconds = asyncio.run(drive(serving.address, platform_key, org_id, principals, steady))
        elapsed = time.monotonic() - started
        assert serving.terminate() == 0, serving.describe()  # drained: batched audit events written

    unexpected = {
        (operation, outcome): count
        for (operation, outcome), count in counted.items()
        if outcome not in EXPECTED.get(operation, {OK})
    }
    assert unexpected == {}, counted
    assert sum(counted.values()) == CALLS
    print(f"\n{CALLS} calls in {elapsed:.1f} s ({CALLS / elapsed:.0f}/s): {dict(sorted(counted.items()))}")
    for operation, taken in seconds.items():
        print(f"  {operation}: {spread(taken)}")
    assert_database_agrees(database_url, counted, setup_exchanges=STEADY_KEYS, setup_keys=STEADY_KEYS + 1)


def spread(seconds: list[float]) -> str:
    """Median, 99th percentile and maximum of ``seconds``."""
    ordered = sorted(seconds)
    return f"p50 {ordered[len(ordered) // 2]:.3f} s, p99 {ordered[len(ordered) * 99 // 100]:.3f} s, max {ordered[-1]:.3f} s"


def assert_database_agrees(
    database_url: str, counted: Counter[tuple[str, str]], setup_exchanges: int, setup_keys: int
) -> None:
    """Quotas held, every key has its creation event, and audit counts match the answers."""
    db = Database(database_url)
    try:
        with db.engine.connect() as connection:
            events = Counter(
                {
                    (row.action, row.outcome, row.reason): row.n
                    for row in connection.execute(
                        text(
                            "SELECT action, outcome, reason, count(*) AS n FROM audit_events GROUP BY action, outcome, reason"
                        )
                    )
                }
            )
            keys = connection.execute(text("SELECT count(*) FROM api_keys")).scalar_one()
            revoked = connection.execute(
                text("SELECT count(*) FROM api_keys WHERE revoke_time IS NOT NULL")
            ).scalar_one()
            without_event = connection.execute(
                text(
                    "SELECT count(*) FROM api_keys k WHERE NOT EXISTS (SELECT 1 FROM audit_events e"
                    " WHERE e.target = k.id AND e.action = 'key.create' AND e.outcome = 'success')"
                )
            ).scalar_one()
            fullest = connection.execute(
                text(
                    "SELECT max(n) FROM (SELECT count(*) AS n FROM api_keys k JOIN organizations o ON o.id = k.org_id"
                    " WHERE k.revoke_time IS NULL AND o.display_name = 'Churn' GROUP BY k.principal_id) AS active"
                )
            ).scalar_one()
    finally:
        db.dispose()
    created = counted[("create", OK)]
    assert without_event == 0
    assert fullest <= QUOTA
    assert keys == created + setup_keys == events[("key.create", "success", "")]
    assert events[("key.create", "failure", "QUOTA_EXCEEDED")] == counted[("create", QUOTA_EXCEEDED)]
    assert revoked == counted[("revoke", OK)] == events[("key.revoke", "success", "")]
    assert events[("token.exchange", "success", "")] == counted[("exchange", OK)] + setup_exchanges
    assert (
        events[("authz.check", "denied", "INSUFFICIENT_SCOPE")]
        == counted[("denied check", INSUFFICIENT_SCOPE)]
    )
    assert {action for action, outcome, _ in events if outcome != "success"} <= {"key.create", "authz.check"}
