"""Envoy's external authorization API (envoy.service.auth.v3.Authorization/Check) on our port.

Gateways ask directly: the credential comes from the HTTP request's ``authorization`` or
``x-api-key`` header, the permission and resource from the route's ``context_extensions``
(``permission``, ``resource_type``, ``resource_id``), the client address from the source.
The same decision engine as Check judges it.
"""

from __future__ import annotations

import json

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2 as pb
from envoy.service.auth.v3 import external_auth_pb2_grpc as pb_grpc
from envoy.type.v3 import http_status_pb2
from google.rpc import code_pb2, status_pb2

from identity.checks import CheckItem, DecisionEngine
from identity.domain.errors import STATUS_OF_REASON, IdentityError, Reason
from identity.domain.model import Origin, ResourceRef
from identity.metadata import credential_from
from identity.tokens import looks_like_jwt

RAW_KEY_HEADER = "x-api-key"


def _credential(headers: dict[str, str]) -> str:
    try:
        return credential_from(tuple(headers.items())) or ""
    except IdentityError:
        return ""


def _allowed(principal_id: str, org_id: str, key_id: str, headers: dict[str, str]) -> pb.CheckResponse:
    add = {"x-identity-principal": principal_id, "x-identity-org": org_id, "x-identity-key": key_id}
    remove = [RAW_KEY_HEADER]
    authorization = headers.get("authorization", "")
    if authorization and not looks_like_jwt(authorization.partition(" ")[2].strip()):
        remove.append("authorization")  # an API key travels no further than the gateway
    return pb.CheckResponse(
        status=status_pb2.Status(code=code_pb2.OK),
        ok_response=pb.OkHttpResponse(
            headers=[
                base_pb2.HeaderValueOption(
                    header=base_pb2.HeaderValue(key=name, value=value),
                    append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
                )
                for name, value in add.items()
            ],
            headers_to_remove=remove,
        ),
    )


# HTTP status and gRPC code of a denial, by the status its reason travels with; others are 403.
_DENIALS = {
    "UNAUTHENTICATED": (http_status_pb2.Unauthorized, code_pb2.UNAUTHENTICATED),
    "RESOURCE_EXHAUSTED": (http_status_pb2.TooManyRequests, code_pb2.RESOURCE_EXHAUSTED),
}


def _denied(reason: Reason, message: str) -> pb.CheckResponse:
    http_code, grpc_code = _DENIALS.get(
        STATUS_OF_REASON[reason], (http_status_pb2.Forbidden, code_pb2.PERMISSION_DENIED)
    )
    body = json.dumps({"success": False, "error": message, "code": reason.value})
    return pb.CheckResponse(
        status=status_pb2.Status(code=grpc_code, message=message),
        denied_response=pb.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=http_code),
            headers=[
                base_pb2.HeaderValueOption(
                    header=base_pb2.HeaderValue(key="content-type", value="application/json")
                )
            ],
            body=body,
        ),
    )


class EnvoyAuthorizationServicer(pb_grpc.AuthorizationServicer):  # type: ignore[misc]
    """Answers Envoy's ext_authz Check with the identity decision engine."""

    def __init__(self, engine: DecisionEngine) -> None:
        """Judge with ``engine``."""
        self._engine = engine

    def Check(self, request: pb.CheckRequest, context: grpc.ServicerContext) -> pb.CheckResponse:
        """Allow (adding identity headers, removing the raw key) or deny with a JSON body."""
        attributes = request.attributes
        headers = {k.lower(): v for k, v in attributes.request.http.headers.items()}
        extensions = attributes.context_extensions
        permission = extensions.get("permission", "")
        resource = None
        if extensions.get("resource_type"):
            resource = ResourceRef(extensions["resource_type"], extensions.get("resource_id", "*"))
        item = CheckItem(tuple(permission.split()), resource)
        client_ip = attributes.source.address.socket_address.address
        origin = Origin(peer=client_ip, client_ip=client_ip, user_agent=headers.get("user-agent", ""))
        try:
            decision = self._engine.check(_credential(headers), item, client_ip, origin)
        except IdentityError as error:
            if error.reason is not Reason.RATE_LIMITED:
                raise
            return _denied(error.reason, error.message)  # a gateway answers 429, so clients back off
        if decision.allowed:
            return _allowed(decision.principal_id, decision.org_id, decision.key_id, headers)
        return _denied(decision.reason, decision.message)
