"""AuthorizationService: Check, BatchCheck and WhoAmI."""

from __future__ import annotations

import grpc

from identity.checks import CheckItem, DecisionEngine
from identity.domain.decisions import Decision
from identity.domain.errors import Reason
from identity.domain.scopes import RATE_TIERS
from identity.services.convert import resource_refs, timestamp
from identity.services.interceptor import current_request, origin_of
from identity.v1 import authorization_service_pb2 as pb
from identity.v1 import authorization_service_pb2_grpc as pb_grpc
from identity.v1 import common_pb2

_REASON_VALUES = common_pb2.DecisionReason.DESCRIPTOR.values_by_name
_REASONS = {
    reason: common_pb2.DecisionReason.Value(f"DECISION_REASON_{reason.value}")
    for reason in Reason
    if f"DECISION_REASON_{reason.value}" in _REASON_VALUES
}
_RATE_TIERS = {tier: pb.RateTier.Value(f"RATE_TIER_{tier.upper()}") for tier in RATE_TIERS}


def decision_message(decision: Decision) -> pb.CheckResponse:
    """A CheckResponse for a decision."""
    return pb.CheckResponse(
        allowed=decision.allowed,
        reason=_REASONS[decision.reason],
        message=decision.message,
        principal_id=decision.principal_id,
        org_id=decision.org_id,
        key_id=decision.key_id,
        granted_scopes=decision.granted_scopes,
        missing_permissions=decision.missing_permissions,
        rate_tier=_RATE_TIERS[decision.rate_tier],
        credential_expire_time=timestamp(decision.credential_expire_time),
    )


def check_item(permissions: list[str], has_resource: bool, resource: common_pb2.ResourceRef) -> CheckItem:
    """What a CheckRequest or BatchCheckItem asks: its permissions, on its resource if it has one."""
    return CheckItem(tuple(permissions), resource_refs([resource])[0] if has_resource else None)


class AuthorizationServicer(pb_grpc.AuthorizationServiceServicer):
    """Serves AuthorizationService over the decision engine."""

    def __init__(self, engine: DecisionEngine) -> None:
        """Judge with ``engine``."""
        self._engine = engine

    def Check(self, request: pb.CheckRequest, context: grpc.ServicerContext) -> pb.CheckResponse:
        """Judge one credential; a denial is an OK response with ``allowed`` false."""
        item = check_item(list(request.permissions), request.HasField("resource"), request.resource)
        return decision_message(
            self._engine.check(request.credential, item, request.client_ip, origin_of(context))
        )

    def BatchCheck(
        self, request: pb.BatchCheckRequest, context: grpc.ServicerContext
    ) -> pb.BatchCheckResponse:
        """Judge many items for one credential, in order."""
        items = [check_item(list(i.permissions), i.HasField("resource"), i.resource) for i in request.items]
        decisions = self._engine.batch(request.credential, items, request.client_ip, origin_of(context))
        return pb.BatchCheckResponse(results=[decision_message(d) for d in decisions])

    def WhoAmI(self, request: pb.WhoAmIRequest, context: grpc.ServicerContext) -> pb.WhoAmIResponse:
        """The caller's own identity, from its call metadata."""
        caller = current_request().caller
        return pb.WhoAmIResponse(
            principal_id=caller.principal_id,
            org_id=caller.org_id,
            key_id=caller.key_id,
            scopes=caller.scopes,
            credential_type=caller.credential_type,
            credential_expire_time=timestamp(caller.credential_expire_time),
            platform=caller.platform,
        )
