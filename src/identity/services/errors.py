"""Domain errors to gRPC statuses with exactly one google.rpc.ErrorInfo (and BadRequest)."""

from __future__ import annotations

import functools

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from identity.domain.errors import IdentityError, Reason

ERROR_DOMAIN = "identity"


def to_status(error: IdentityError) -> grpc.Status:
    """The status for ``error``: its code, message, ErrorInfo, and field violations if any."""
    if not error.violations:  # the common refusals repeat: build each one once
        return _plain_status(error.reason, error.message)
    return _status(error)


@functools.lru_cache(maxsize=1024)
def _plain_status(reason: Reason, message: str) -> grpc.Status:
    return _status(IdentityError(reason, message))


def _status(error: IdentityError) -> grpc.Status:
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=error.reason.value, domain=ERROR_DOMAIN))
    details = [info]
    if error.violations:
        bad_request = any_pb2.Any()
        bad_request.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                    for v in error.violations
                ]
            )
        )
        details.append(bad_request)
    code = getattr(code_pb2, error.status)
    return rpc_status.to_status(status_pb2.Status(code=code, message=error.message, details=details))


def status_code(error: IdentityError) -> grpc.StatusCode:
    """The grpc.StatusCode member for ``error``."""
    return grpc.StatusCode[error.status]
