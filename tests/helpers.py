"""Test helpers: stubs bound to a credential, readers of rich error details, a thread that may not wait."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.field_mask_pb2 import FieldMask
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine

from identity.blocking import forbid_blocking
from identity.crypto import apikeys
from identity.v1 import (
    audit_service_pb2_grpc,
    authorization_service_pb2_grpc,
    common_pb2,
    key_service_pb2,
    key_service_pb2_grpc,
    organization_service_pb2,
    organization_service_pb2_grpc,
    principal_service_pb2,
    principal_service_pb2_grpc,
)


def mistyped(api_key: str) -> str:
    """``api_key`` with its last character changed: always a different key (a fixed swap may be a no-op)."""
    return api_key[:-1] + ("B" if api_key.endswith("A") else "A")


def forged(api_key: str) -> str:
    """A well-formed key with ``api_key``'s lookup handle and another secret: it reaches argon2."""
    parsed = apikeys.parse(api_key)
    assert parsed is not None, "not a well-formed API key"
    return apikeys.generate(parsed.kind, parsed.environment, parsed.lookup).plaintext


def auth(api_key: str) -> tuple[tuple[str, str], ...]:
    """Call metadata carrying ``api_key`` as a Bearer credential."""
    return (("authorization", f"Bearer {api_key}"),)


@dataclass
class ErrorDetails:
    """What a failed RPC said: code, ErrorInfo reason and domain, and BadRequest fields."""

    code: grpc.StatusCode
    message: str
    reason: str
    domain: str
    fields: list[str]
    error_infos: int


def details_of(error: grpc.RpcError) -> ErrorDetails:
    """Decode the rich status of a failed call."""
    status = rpc_status.from_call(error)
    assert status is not None, f"no rich status on {error}"
    reason, domain, fields, infos = "", "", [], 0
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, domain, infos = info.reason, info.domain, infos + 1
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields = [v.field for v in bad.field_violations]
    return ErrorDetails(error.code(), status.message, reason, domain, fields, infos)


def expect_error(call: Callable[[], Any], code: grpc.StatusCode, reason: str) -> ErrorDetails:
    """Run ``call``, assert it fails with ``code`` and exactly one ErrorInfo ``reason``, return the details."""
    try:
        call()
    except grpc.RpcError as error:
        details = details_of(error)
    else:
        raise AssertionError(f"expected {code.name} {reason}, the call succeeded")
    assert (details.code, details.reason) == (code, reason), details
    assert details.domain == "identity" and details.error_infos == 1, details
    return details


class Admin:
    """Stubs for every admin service, calling with one credential."""

    def __init__(self, channel: grpc.Channel, api_key: str) -> None:
        self.api_key = api_key
        self.metadata = auth(api_key) if api_key else ()
        self.orgs = organization_service_pb2_grpc.OrganizationServiceStub(channel)
        self.principals = principal_service_pb2_grpc.PrincipalServiceStub(channel)
        self.keys = key_service_pb2_grpc.KeyServiceStub(channel)
        self.audit = audit_service_pb2_grpc.AuditServiceStub(channel)
        self.authz = authorization_service_pb2_grpc.AuthorizationServiceStub(channel)

    def create_org(self, name: str = "Acme", **policy: Any) -> organization_service_pb2.Organization:
        """Create an organization with an optional key policy."""
        request = organization_service_pb2.CreateOrganizationRequest(
            display_name=name, key_policy=organization_service_pb2.KeyPolicy(**policy)
        )
        return self.orgs.CreateOrganization(request, metadata=self.metadata).organization

    def create_principal(
        self,
        org_id: str,
        kind: principal_service_pb2.PrincipalKind.ValueType = principal_service_pb2.PRINCIPAL_KIND_SERVICE_ACCOUNT,
        name: str = "robot",
    ) -> principal_service_pb2.Principal:
        """Create a principal (a service account by default)."""
        request = principal_service_pb2.CreatePrincipalRequest(org_id=org_id, kind=kind, display_name=name)
        return self.principals.CreatePrincipal(request, metadata=self.metadata).principal

    def create_key(
        self,
        org_id: str,
        principal_id: str,
        scopes: list[str],
        resources: list[tuple[str, str]] = (),  # type: ignore[assignment]
        **fields: Any,
    ) -> key_service_pb2.CreateKeyResponse:
        """Create a key; ``fields`` are other CreateKeyRequest fields."""
        fields.setdefault("display_name", "test key")
        request = key_service_pb2.CreateKeyRequest(
            org_id=org_id,
            principal_id=principal_id,
            scopes=scopes,
            resources=[common_pb2.ResourceRef(type=t, id=i) for t, i in resources],
            **fields,
        )
        response: key_service_pb2.CreateKeyResponse = self.keys.CreateKey(request, metadata=self.metadata)
        return response

    def set_organization_state(
        self, org_id: str, state: organization_service_pb2.OrganizationState.ValueType
    ) -> None:
        """Activate or deactivate an organization (a platform caller)."""
        self.orgs.UpdateOrganization(
            organization_service_pb2.UpdateOrganizationRequest(
                organization=organization_service_pb2.Organization(id=org_id, state=state),
                update_mask=FieldMask(paths=["state"]),
            ),
            metadata=self.metadata,
        )

    def set_principal_state(
        self, principal_id: str, state: principal_service_pb2.PrincipalState.ValueType
    ) -> None:
        """Enable or disable a principal."""
        self.principals.UpdatePrincipal(
            principal_service_pb2.UpdatePrincipalRequest(
                principal=principal_service_pb2.Principal(id=principal_id, state=state),
                update_mask=FieldMask(paths=["state"]),
            ),
            metadata=self.metadata,
        )

    def tenant_admin(self, scopes: list[str] | None = None, **policy: Any) -> tuple[str, str, str]:
        """A new organization with a service account holding an admin key: (org_id, principal_id, api_key)."""
        org = self.create_org(**policy)
        account = self.create_principal(org.id)
        wanted = scopes if scopes is not None else ["admin:apikeys", "admin:users", "read:audit"]
        return org.id, account.id, self.create_key(org.id, account.id, wanted).api_key


# Tables whose contents a refused request must leave exactly as they were (audit rows may be added).
BUSINESS_TABLES = ("organizations", "principals", "api_keys", "key_changes", "create_key_requests")


def table_rows(engine: Engine, tables: tuple[str, ...] = BUSINESS_TABLES) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of each of ``tables``, in a stable order, as plain tuples."""
    with engine.connect() as connection:
        return {
            table: sorted(
                (tuple(row) for row in connection.execute(text(f"SELECT * FROM {table}"))), key=repr
            )
            for table in tables
        }


def stored_values(engine: Engine) -> list[tuple[str, str, str]]:
    """``(table, column, value)`` for every non-null value of every table, as text (JSON dumped)."""
    found: list[tuple[str, str, str]] = []
    with engine.connect() as connection:
        for table in inspect(connection).get_table_names():
            result = connection.execute(text(f'SELECT * FROM "{table}"'))
            columns = list(result.keys())
            for row in result:
                for column, value in zip(columns, row, strict=True):
                    if value is None:
                        continue
                    shown = json.dumps(value) if isinstance(value, dict | list) else str(value)
                    found.append((table, column, shown))
    return found


def on_forbidden_thread(work: Callable[[], Any]) -> BaseException | Any:
    """What ``work`` returned or raised on a new thread that must not wait."""
    outcome: list[Any] = []

    def run() -> None:
        forbid_blocking()
        try:
            outcome.append(work())
        except BaseException as exc:  # handed to the test to judge
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return outcome[0]
