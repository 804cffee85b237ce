"""PrincipalService."""

from __future__ import annotations

from typing import Any

import grpc

from identity.app.principals import Principals
from identity.domain.errors import invalid
from identity.services.convert import PRINCIPAL_KINDS, PRINCIPAL_STATES, from_proto_enum, principal_message
from identity.services.interceptor import current_request
from identity.services.masks import mask_paths
from identity.v1 import principal_service_pb2 as pb
from identity.v1 import principal_service_pb2_grpc as pb_grpc


class PrincipalServicer(pb_grpc.PrincipalServiceServicer):
    """Serves PrincipalService over the Principals use cases."""

    def __init__(self, principals: Principals) -> None:
        """Serve ``principals``."""
        self._principals = principals

    def CreatePrincipal(
        self, request: pb.CreatePrincipalRequest, context: grpc.ServicerContext
    ) -> pb.CreatePrincipalResponse:
        """Create a principal."""
        kind = from_proto_enum(PRINCIPAL_KINDS, request.kind)
        principal = self._principals.create(current_request(), request.org_id, kind, request.display_name)
        return pb.CreatePrincipalResponse(principal=principal_message(principal))

    def GetPrincipal(
        self, request: pb.GetPrincipalRequest, context: grpc.ServicerContext
    ) -> pb.GetPrincipalResponse:
        """Return one principal."""
        return pb.GetPrincipalResponse(
            principal=principal_message(self._principals.get(current_request(), request.id))
        )

    def ListPrincipals(
        self, request: pb.ListPrincipalsRequest, context: grpc.ServicerContext
    ) -> pb.ListPrincipalsResponse:
        """List an organization's principals."""
        found, token = self._principals.list_page(
            current_request(),
            request.org_id,
            from_proto_enum(PRINCIPAL_KINDS, request.kind),
            from_proto_enum(PRINCIPAL_STATES, request.state),
            request.page_size,
            request.page_token,
        )
        return pb.ListPrincipalsResponse(
            principals=[principal_message(p) for p in found], next_page_token=token
        )

    def UpdatePrincipal(
        self, request: pb.UpdatePrincipalRequest, context: grpc.ServicerContext
    ) -> pb.UpdatePrincipalResponse:
        """Apply a masked update."""
        paths = mask_paths(request.update_mask, {"display_name", "state"})
        message = request.principal
        changes: dict[str, Any] = {}
        if "display_name" in paths:
            changes["display_name"] = message.display_name
        if "state" in paths:
            state = from_proto_enum(PRINCIPAL_STATES, message.state)
            if state is None:
                raise invalid("principal.state", "must be PRINCIPAL_STATE_ACTIVE or PRINCIPAL_STATE_DISABLED")
            changes["state"] = state
        principal = self._principals.update(current_request(), message.id, changes)
        return pb.UpdatePrincipalResponse(principal=principal_message(principal))

    def SetPrincipalPassword(
        self, request: pb.SetPrincipalPasswordRequest, context: grpc.ServicerContext
    ) -> pb.SetPrincipalPasswordResponse:
        """Set a service account's password."""
        principal = self._principals.set_password(current_request(), request.principal_id, request.password)
        return pb.SetPrincipalPasswordResponse(principal=principal_message(principal))
