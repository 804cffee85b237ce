"""Repeated wrong secrets, for one lookup handle or from one client, end in RESOURCE_EXHAUSTED
RATE_LIMITED at every door that takes a key: the v2 and v3 exchanges, client credentials and
Check. Each throttled run is audited with its reason and attempt count, and never a secret."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest

from identity.crypto import apikeys
from identity.domain.model import KeyKind
from identity.v1 import (
    audit_service_pb2,
    authorization_service_pb2,
    authorization_service_pb2_grpc,
    common_pb2,
    token_service_pb2,
    token_service_pb2_grpc,
)
from tests.conftest import Harness
from tests.helpers import details_of

BUDGET = 3  # failures allowed in the test servers, per handle or per client as the test says
THROTTLED = 4  # attempts made after the budget is spent


class Doors:
    """A real key, and one call per door presenting whatever key it is given."""

    def __init__(self, harness: Harness) -> None:
        self.harness = harness
        self.admin = harness.admin()
        self.org_id = self.admin.create_org("Brute").id
        created = self.admin.create_key(
            self.org_id, self.admin.create_principal(self.org_id).id, ["stock:read"]
        )
        self.key_id, self.api_key = created.key.id, created.api_key
        tokens = token_service_pb2_grpc.TokenServiceStub(harness.channel)
        checks = authorization_service_pb2_grpc.AuthorizationServiceStub(harness.channel)
        self.calls: dict[str, Callable[[str], Any]] = {
            "v2": lambda key: tokens.ExchangeApiKey(token_service_pb2.ExchangeApiKeyRequest(api_key=key)),
            "v3": lambda key: tokens.ExchangeApiKeyWithId(
                token_service_pb2.ExchangeApiKeyWithIdRequest(key_id=self.key_id, api_key=key)
            ),
            "client_credentials": lambda key: tokens.ExchangeClientCredentials(
                token_service_pb2.ExchangeClientCredentialsRequest(
                    grant_type="client_credentials",
                    client_id=self.key_id,
                    client_secret=key,
                    org_id=self.org_id,
                )
            ),
            "check": lambda key: checks.Check(
                authorization_service_pb2.CheckRequest(
                    credential=key, permissions=["stock:read"], client_ip="10.9.8.7"
                )
            ),
        }

    def wrong_secret(self) -> str:
        """The real key's lookup handle with a secret of its own."""
        parsed = apikeys.parse(self.api_key)
        assert parsed is not None
        return apikeys.generate(parsed.kind, parsed.environment, parsed.lookup).plaintext

    def answer(self, door: str, key: str) -> str:
        """What the door said: a status and reason, or a Check's decision reason."""
        try:
            reply = self.calls[door](key)
        except grpc.RpcError as error:
            details = details_of(error)
            return f"{details.code.name} {details.reason}"
        if door == "check":
            return common_pb2.DecisionReason.Name(reply.reason).removeprefix("DECISION_REASON_")
        return "OK"

    def throttled_events(self) -> list[audit_service_pb2.AuditEvent]:
        self.harness.server.writer.flush()
        request = audit_service_pb2.ListAuditEventsRequest(page_size=1000)
        events = self.admin.audit.ListAuditEvents(request, metadata=self.admin.metadata).events
        return [e for e in events if e.reason == "RATE_LIMITED"]


def expected_answers(door: str) -> list[str]:
    refused = "INVALID_API_KEY" if door == "check" else "UNAUTHENTICATED INVALID_API_KEY"
    return [refused] * BUDGET + ["RESOURCE_EXHAUSTED RATE_LIMITED"] * THROTTLED


def assert_audited(doors: Doors, door: str, presented: list[str]) -> None:
    (event,) = doors.throttled_events()
    assert event.action == ("authz.check" if door == "check" else "token.exchange"), event
    assert event.details["attempts"] == str(THROTTLED), event
    if door != "check":
        assert event.details["flow"] == door, event
    assert event.peer.startswith("ipv"), event
    for secret in presented:
        assert apikeys.parse(secret).secret not in str(event)  # type: ignore[union-attr]


@pytest.mark.parametrize("door", ["v2", "v3", "client_credentials", "check"])
@pytest.mark.settings(failed_attempts_per_key=BUDGET)
def test_wrong_secrets_for_one_lookup_handle_are_throttled(harness: Harness, door: str) -> None:
    doors = Doors(harness)
    wrong = [doors.wrong_secret() for _ in range(BUDGET + THROTTLED)]
    assert [doors.answer(door, key) for key in wrong] == expected_answers(door)
    assert_audited(doors, door, wrong)
    # Another client's key is not held up by the flood on this handle.
    other = doors.admin.create_key(
        doors.org_id, doors.admin.create_principal(doors.org_id).id, ["stock:read"]
    )
    doors.key_id = other.key.id
    assert doors.answer(door, other.api_key) in ("OK", "ALLOWED")


@pytest.mark.parametrize("door", ["v2", "v3", "client_credentials", "check"])
@pytest.mark.settings(failed_attempts_per_peer=BUDGET)
def test_wrong_keys_from_one_client_are_throttled(harness: Harness, door: str) -> None:
    doors = Doors(harness)
    unknown = [apikeys.generate(KeyKind.SECRET, "live").plaintext for _ in range(BUDGET + THROTTLED)]
    assert [doors.answer(door, key) for key in unknown] == expected_answers(door)
    assert_audited(doors, door, unknown)
    # The throttled client is refused even its real key until its budget refills: that is the point.
    assert doors.answer(door, doors.api_key) == "RESOURCE_EXHAUSTED RATE_LIMITED"
