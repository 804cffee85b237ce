"""AuthorizationService: WhoAmI now; Check and BatchCheck arrive with the checks issue."""

from __future__ import annotations

import grpc

from identity.services.convert import timestamp
from identity.services.interceptor import current_request
from identity.v1 import authorization_service_pb2 as pb
from identity.v1 import authorization_service_pb2_grpc as pb_grpc


class AuthorizationServicer(pb_grpc.AuthorizationServiceServicer):
    """Serves AuthorizationService; Check and BatchCheck answer UNIMPLEMENTED until their issue."""

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
