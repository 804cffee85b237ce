"""OrganizationService."""

from __future__ import annotations

from typing import Any

import grpc

from identity.app.organizations import Organizations
from identity.domain.errors import invalid
from identity.domain.model import KeyPolicy
from identity.services.convert import ORG_STATES, from_proto_enum, organization_message, policy_fields
from identity.services.interceptor import current_request
from identity.services.masks import mask_paths
from identity.v1 import organization_service_pb2 as pb
from identity.v1 import organization_service_pb2_grpc as pb_grpc

_POLICY_FIELDS = tuple(f.name for f in pb.KeyPolicy.DESCRIPTOR.fields)


class OrganizationServicer(pb_grpc.OrganizationServiceServicer):
    """Serves OrganizationService over the Organizations use cases."""

    def __init__(self, organizations: Organizations) -> None:
        """Serve ``organizations``."""
        self._organizations = organizations

    def CreateOrganization(
        self, request: pb.CreateOrganizationRequest, context: grpc.ServicerContext
    ) -> pb.CreateOrganizationResponse:
        """Create an organization."""
        org = self._organizations.create(
            current_request(), request.display_name, policy_fields(request.key_policy)
        )
        return pb.CreateOrganizationResponse(organization=organization_message(org))

    def GetOrganization(
        self, request: pb.GetOrganizationRequest, context: grpc.ServicerContext
    ) -> pb.GetOrganizationResponse:
        """Return one organization."""
        org = self._organizations.get(current_request(), request.id)
        return pb.GetOrganizationResponse(organization=organization_message(org))

    def ListOrganizations(
        self, request: pb.ListOrganizationsRequest, context: grpc.ServicerContext
    ) -> pb.ListOrganizationsResponse:
        """List organizations."""
        orgs, token = self._organizations.list_page(current_request(), request.page_size, request.page_token)
        return pb.ListOrganizationsResponse(
            organizations=[organization_message(o) for o in orgs], next_page_token=token
        )

    def UpdateOrganization(
        self, request: pb.UpdateOrganizationRequest, context: grpc.ServicerContext
    ) -> pb.UpdateOrganizationResponse:
        """Apply a masked update."""
        paths = mask_paths(
            request.update_mask,
            {"display_name", "state", "key_policy", *(f"key_policy.{f}" for f in _POLICY_FIELDS)},
        )
        message = request.organization
        changes: dict[str, Any] = {}
        policy: dict[str, Any] = {}
        if "display_name" in paths:
            changes["display_name"] = message.display_name
        if "state" in paths:
            state = from_proto_enum(ORG_STATES, message.state)
            if state is None:
                raise invalid(
                    "organization.state", "must be ORGANIZATION_STATE_ACTIVE or ORGANIZATION_STATE_INACTIVE"
                )
            changes["state"] = state
        if "key_policy" in paths:
            # The whole policy: fields the message leaves unset go back to their defaults.
            policy = {name: getattr(KeyPolicy(), name) for name in _POLICY_FIELDS}
            policy |= policy_fields(message.key_policy)
        for name in _POLICY_FIELDS:
            if f"key_policy.{name}" in paths:
                # A masked field left unset goes back to its default, as in a whole-policy update.
                present = message.key_policy.HasField(name)  # type: ignore[arg-type]
                policy[name] = getattr(message.key_policy if present else KeyPolicy(), name)
        org = self._organizations.update(current_request(), message.id, changes, policy)
        return pb.UpdateOrganizationResponse(organization=organization_message(org))
