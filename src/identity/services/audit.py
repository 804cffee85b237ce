"""AuditService."""

from __future__ import annotations

import grpc

from identity.app.audit import AuditLog
from identity.services.convert import AUDIT_OUTCOMES, audit_message, from_proto_enum, to_datetime
from identity.services.interceptor import current_request
from identity.store.repository import AuditFilter
from identity.v1 import audit_service_pb2 as pb
from identity.v1 import audit_service_pb2_grpc as pb_grpc


class AuditServicer(pb_grpc.AuditServiceServicer):
    """Serves AuditService over the AuditLog use case."""

    def __init__(self, audit: AuditLog) -> None:
        """Serve ``audit``."""
        self._audit = audit

    def ListAuditEvents(
        self, request: pb.ListAuditEventsRequest, context: grpc.ServicerContext
    ) -> pb.ListAuditEventsResponse:
        """List audit events, newest first."""
        where = AuditFilter(
            org_id=request.org_id,
            key_id=request.key_id,
            principal_id=request.principal_id,
            action=request.action,
            outcome=from_proto_enum(AUDIT_OUTCOMES, request.outcome),
            start_time=to_datetime(request.start_time, "start_time")
            if request.HasField("start_time")
            else None,
            end_time=to_datetime(request.end_time, "end_time") if request.HasField("end_time") else None,
        )
        events, token = self._audit.list_page(current_request(), where, request.page_size, request.page_token)
        return pb.ListAuditEventsResponse(events=[audit_message(e) for e in events], next_page_token=token)
