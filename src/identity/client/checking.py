"""Mode (b): judge a credential by asking ``AuthorizationService.Check``.

Unlike offline verification this sees revocations at once and accepts API keys as well as
tokens. When the identity service cannot answer, the call is refused (UNAVAILABLE): fail closed.
"""

from __future__ import annotations

from datetime import UTC

import grpc

from identity.client.identity import Identity
from identity.domain.errors import STATUS_OF_REASON, IdentityError, Reason
from identity.v1 import authorization_service_pb2 as pb
from identity.v1 import authorization_service_pb2_grpc as pb_grpc
from identity.v1 import common_pb2

CHECK_TIMEOUT_SECONDS = 5.0
_REASON_PREFIX = "DECISION_REASON_"


def check_request(credential: str, permission: str, client_ip: str) -> pb.CheckRequest:
    """The Check request for one credential, one permission and the caller's address."""
    return pb.CheckRequest(credential=credential, permissions=[permission], client_ip=client_ip)


def decision(response: pb.CheckResponse) -> Identity:
    """The identity an allowing CheckResponse names; the denial it carries as an IdentityError."""
    if response.allowed:
        tier = pb.RateTier.Name(response.rate_tier).removeprefix("RATE_TIER_").lower()
        return Identity(
            principal_id=response.principal_id,
            org_id=response.org_id,
            key_id=response.key_id,
            scopes=tuple(response.granted_scopes),
            rate_tier="standard" if tier == "unspecified" else tier,
            expire_time=response.credential_expire_time.ToDatetime(tzinfo=UTC)
            if response.HasField("credential_expire_time")
            else None,
        )
    name = common_pb2.DecisionReason.Name(response.reason).removeprefix(_REASON_PREFIX)
    reason = Reason.__members__.get(name, Reason.INTERNAL)
    if reason not in STATUS_OF_REASON:
        reason = Reason.INTERNAL  # a denial without a denial reason: refuse all the same
    raise IdentityError(reason, response.message or f"denied: {reason.value}")


def unreachable(error: grpc.RpcError) -> IdentityError:
    """The refusal when Check itself failed."""
    return IdentityError(
        Reason.UNAVAILABLE, f"the identity service could not judge the credential: {error.code().name}"
    )


class CheckAuthorizer:
    """Judges each call with ``AuthorizationService.Check`` over a grpcio channel."""

    def __init__(self, channel: grpc.Channel, *, timeout: float = CHECK_TIMEOUT_SECONDS) -> None:
        """Ask the identity service behind ``channel``, waiting at most ``timeout`` seconds."""
        self._stub = pb_grpc.AuthorizationServiceStub(channel)
        self._timeout = timeout

    def authorize(self, credential: str, permission: str, client_ip: str) -> Identity:
        """The identity of ``credential`` if Check allows it ``permission`` from ``client_ip``."""
        try:
            response = self._stub.Check(
                check_request(credential, permission, client_ip), timeout=self._timeout
            )
        except grpc.RpcError as error:
            raise unreachable(error) from None
        return decision(response)


class AioCheckAuthorizer:
    """Judges each call with ``AuthorizationService.Check`` over a ``grpc.aio`` channel."""

    def __init__(self, channel: grpc.aio.Channel, *, timeout: float = CHECK_TIMEOUT_SECONDS) -> None:
        """Ask the identity service behind ``channel``, waiting at most ``timeout`` seconds."""
        self._stub = pb_grpc.AuthorizationServiceStub(channel)
        self._timeout = timeout

    async def authorize(self, credential: str, permission: str, client_ip: str) -> Identity:
        """The identity of ``credential`` if Check allows it ``permission`` from ``client_ip``."""
        try:
            response = await self._stub.Check(
                check_request(credential, permission, client_ip), timeout=self._timeout
            )
        except grpc.RpcError as error:
            raise unreachable(error) from None
        return decision(response)
