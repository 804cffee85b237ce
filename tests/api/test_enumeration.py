"""An unknown key and a known key with a wrong secret are indistinguishable: same status, same
message, the same argon2id work, and the same median latency, for the v2 and v3 exchanges and
for Check with an API key."""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from identity.authz import INVALID_KEY_MESSAGE
from identity.crypto import apikeys
from identity.crypto.hashing import SecretHasher
from identity.domain.model import KeyKind
from identity.ids import new_id
from identity.v1 import (
    authorization_service_pb2,
    authorization_service_pb2_grpc,
    common_pb2,
    token_service_pb2,
    token_service_pb2_grpc,
)
from tests.conftest import Harness
from tests.helpers import details_of

SAMPLES = 500
WARM_UP = 20
TOLERANCE = 0.10  # medians within 10% of each other

# Throttling would answer RATE_LIMITED long before 500 failures: lift it out of the way.
pytestmark = pytest.mark.settings(failed_attempts_per_key=10**9, failed_attempts_per_peer=10**9)


class Probes:
    """For each door, a call with an unknown key and one with a known key's wrong secret."""

    def __init__(self, harness: Harness) -> None:
        admin = harness.admin()
        org_id = admin.create_org("Enum").id
        created = admin.create_key(org_id, admin.create_principal(org_id).id, ["stock:read"])
        parsed = apikeys.parse(created.api_key)
        assert parsed is not None
        self.key_id = created.key.id
        # The real lookup handle with another secret, and a handle no key has: both well-formed.
        self.wrong_secret = apikeys.generate(parsed.kind, parsed.environment, parsed.lookup).plaintext
        self.unknown_key = apikeys.generate(KeyKind.SECRET, "live").plaintext
        self.unknown_id = new_id("key")
        self.tokens = token_service_pb2_grpc.TokenServiceStub(harness.channel)
        self.checks = authorization_service_pb2_grpc.AuthorizationServiceStub(harness.channel)

    def doors(self) -> dict[str, tuple[Callable[[], Any], Callable[[], Any]]]:
        """door -> (unknown key call, wrong secret call); each returns what the caller sees."""
        return {
            "v2 exchange": (
                lambda: self._refusal(self.tokens.ExchangeApiKey, self._v2(self.unknown_key)),
                lambda: self._refusal(self.tokens.ExchangeApiKey, self._v2(self.wrong_secret)),
            ),
            "v3 exchange": (
                lambda: self._refusal(
                    self.tokens.ExchangeApiKeyWithId, self._v3(self.unknown_id, self.unknown_key)
                ),
                lambda: self._refusal(
                    self.tokens.ExchangeApiKeyWithId, self._v3(self.key_id, self.wrong_secret)
                ),
            ),
            "Check": (lambda: self._check(self.unknown_key), lambda: self._check(self.wrong_secret)),
        }

    @staticmethod
    def _v2(api_key: str) -> token_service_pb2.ExchangeApiKeyRequest:
        return token_service_pb2.ExchangeApiKeyRequest(api_key=api_key)

    @staticmethod
    def _v3(key_id: str, api_key: str) -> token_service_pb2.ExchangeApiKeyWithIdRequest:
        return token_service_pb2.ExchangeApiKeyWithIdRequest(key_id=key_id, api_key=api_key)

    @staticmethod
    def _refusal(rpc: Callable[[Any], Any], request: Any) -> tuple[Any, ...]:
        try:
            rpc(request)
        except grpc.RpcError as error:
            details = details_of(error)
            return details.code, details.reason, details.message, details.fields
        raise AssertionError("the call succeeded")

    def _check(self, credential: str) -> authorization_service_pb2.CheckResponse:
        return self.checks.Check(
            authorization_service_pb2.CheckRequest(credential=credential, permissions=["stock:read"])
        )


@pytest.fixture
def probes(harness: Harness) -> Probes:
    return Probes(harness)


def test_both_answers_are_the_same_and_cost_one_argon2_verification(
    probes: Probes, monkeypatch: pytest.MonkeyPatch
) -> None:
    verify = SecretHasher.verify
    calls: list[str | None] = []

    def counting(self: SecretHasher, encoded: str | None, secret: str) -> bool:
        calls.append(encoded)
        return verify(self, encoded, secret)

    monkeypatch.setattr(SecretHasher, "verify", counting)
    for door, (unknown, wrong) in probes.doors().items():
        answers = []
        for call in (unknown, wrong):
            calls.clear()
            answers.append(call())
            # Exactly one argon2id verification each: against the decoy hash for an unknown key.
            assert len(calls) == 1, (door, call)
        assert answers[0] == answers[1], door
        assert answers[0] == EXPECTED[door], door


REFUSED: tuple[Any, ...] = (grpc.StatusCode.UNAUTHENTICATED, "INVALID_API_KEY", INVALID_KEY_MESSAGE, [])
EXPECTED = {
    "v2 exchange": REFUSED,
    "v3 exchange": REFUSED,
    "Check": authorization_service_pb2.CheckResponse(
        allowed=False,
        reason=common_pb2.DECISION_REASON_INVALID_API_KEY,
        message=INVALID_KEY_MESSAGE,
        rate_tier=authorization_service_pb2.RATE_TIER_STANDARD,
    ),
}


def test_median_latencies_differ_by_at_most_ten_percent(probes: Probes) -> None:
    medians = {}
    for door, (unknown, wrong) in probes.doors().items():
        for _ in range(WARM_UP):
            unknown(), wrong()
        seconds: dict[str, list[float]] = {"unknown": [], "wrong": []}
        for _ in range(SAMPLES):
            # Interleaved in a random order, so drifts in machine load fall on both alike.
            pair = [("unknown", unknown), ("wrong", wrong)]
            random.shuffle(pair)
            for name, call in pair:
                started = time.perf_counter()
                call()
                seconds[name].append(time.perf_counter() - started)
        medians[door] = {name: statistics.median(values) * 1000 for name, values in seconds.items()}
    print({door: {k: round(v, 3) for k, v in m.items()} for door, m in medians.items()})
    for door, m in medians.items():
        low, high = sorted(m.values())
        assert high <= low * (1 + TOLERANCE), (door, m)
