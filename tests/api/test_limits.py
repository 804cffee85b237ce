"""Every string and repeated field of every identity.v1 request has a limit.

The cases come from the service descriptors, not from a list kept by hand: a field added to any
request message is sent oversize here too, and must be refused with INVALID_ARGUMENT naming it,
changing nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message

from identity.services.limits import MAX_ITEMS, MAX_STRING, max_length
from identity.v1 import (
    audit_service_pb2,
    authorization_service_pb2,
    key_service_pb2,
    organization_service_pb2,
    principal_service_pb2,
    token_service_pb2,
    token_service_pb2_grpc,
)
from tests.api import test_bad_input
from tests.api.test_bad_input import World, duration, refused
from tests.helpers import BUSINESS_TABLES, details_of, table_rows

SERVICE_MODULES = (
    audit_service_pb2,
    authorization_service_pb2,
    key_service_pb2,
    organization_service_pb2,
    principal_service_pb2,
    token_service_pb2,
)
METHODS: dict[str, MethodDescriptor] = {
    f"{service.name}/{method.name}": method
    for module in SERVICE_MODULES
    for service in module.DESCRIPTOR.services_by_name.values()
    for method in service.methods
}
# Fields documented longer than MAX_STRING (each names why in identity.services.limits).
LONGER = {
    "identity.v1.CheckRequest.credential",
    "identity.v1.BatchCheckRequest.credential",
    "identity.v1.IntrospectTokenRequest.token",
    "identity.v1.RevokeTokenRequest.token",
    "identity.v1.ExchangeClientCredentialsRequest.scope",
}

Mutation = Callable[[Message], None]
world = test_bad_input.world  # the fixture: a platform admin, an organization, a key


def baseline(world: World, rpc: str) -> Message:
    """A request to ``rpc`` that passes validation: each case below breaks exactly one field."""
    requests = {
        "AuditService/ListAuditEvents": audit_service_pb2.ListAuditEventsRequest(org_id=world.org_id),
        "AuthorizationService/Check": authorization_service_pb2.CheckRequest(
            credential=world.api_key, permissions=["inventory:read"]
        ),
        "AuthorizationService/BatchCheck": authorization_service_pb2.BatchCheckRequest(
            credential=world.api_key,
            items=[authorization_service_pb2.BatchCheckItem(permissions=["inventory:read"])],
        ),
        "AuthorizationService/WhoAmI": authorization_service_pb2.WhoAmIRequest(),
        "KeyService/CreateKey": key_service_pb2.CreateKeyRequest(
            org_id=world.org_id, principal_id=world.principal_id, display_name="k", scopes=["inventory:read"]
        ),
        "KeyService/GetKey": key_service_pb2.GetKeyRequest(id=world.key.id),
        "KeyService/ListKeys": key_service_pb2.ListKeysRequest(org_id=world.org_id),
        "KeyService/UpdateKey": key_service_pb2.UpdateKeyRequest(
            key=key_service_pb2.Key(id=world.key.id, display_name="renamed"),
            update_mask=FieldMask(paths=["display_name"]),
        ),
        "KeyService/RotateKey": key_service_pb2.RotateKeyRequest(key_id=world.key.id),
        "KeyService/RevokeKey": key_service_pb2.RevokeKeyRequest(key_id=world.key.id, reason="gone"),
        "KeyService/DeleteKey": key_service_pb2.DeleteKeyRequest(key_id=world.key.id),
        "KeyService/ListExpiringKeys": key_service_pb2.ListExpiringKeysRequest(
            org_id=world.org_id, within=duration(timedelta(days=30))
        ),
        "KeyService/WatchKeyEvents": key_service_pb2.WatchKeyEventsRequest(org_id=world.org_id),
        "OrganizationService/CreateOrganization": organization_service_pb2.CreateOrganizationRequest(
            display_name="Org"
        ),
        "OrganizationService/GetOrganization": organization_service_pb2.GetOrganizationRequest(
            id=world.org_id
        ),
        "OrganizationService/ListOrganizations": organization_service_pb2.ListOrganizationsRequest(),
        "OrganizationService/UpdateOrganization": organization_service_pb2.UpdateOrganizationRequest(
            organization=organization_service_pb2.Organization(id=world.org_id, display_name="renamed"),
            update_mask=FieldMask(paths=["display_name"]),
        ),
        "PrincipalService/CreatePrincipal": principal_service_pb2.CreatePrincipalRequest(
            org_id=world.org_id, kind=principal_service_pb2.PRINCIPAL_KIND_USER, display_name="alice"
        ),
        "PrincipalService/GetPrincipal": principal_service_pb2.GetPrincipalRequest(id=world.principal_id),
        "PrincipalService/ListPrincipals": principal_service_pb2.ListPrincipalsRequest(org_id=world.org_id),
        "PrincipalService/UpdatePrincipal": principal_service_pb2.UpdatePrincipalRequest(
            principal=principal_service_pb2.Principal(id=world.principal_id, display_name="renamed"),
            update_mask=FieldMask(paths=["display_name"]),
        ),
        "PrincipalService/SetPrincipalPassword": principal_service_pb2.SetPrincipalPasswordRequest(
            principal_id=world.principal_id, password="a long enough password"
        ),
        "TokenService/ExchangeApiKey": token_service_pb2.ExchangeApiKeyRequest(api_key=world.api_key),
        "TokenService/ExchangeApiKeyWithId": token_service_pb2.ExchangeApiKeyWithIdRequest(
            key_id=world.key.id, api_key=world.api_key
        ),
        "TokenService/ExchangeClientCredentials": token_service_pb2.ExchangeClientCredentialsRequest(
            grant_type="client_credentials",
            client_id=world.key.id,
            client_secret=world.api_key,
            org_id=world.org_id,
            scope="inventory:read",
        ),
        "TokenService/ExchangePassword": token_service_pb2.ExchangePasswordRequest(
            username=world.principal_id,
            password="a long enough password",
            client_id=world.key.id,
            client_secret=world.api_key,
        ),
        "TokenService/GetJwks": token_service_pb2.GetJwksRequest(),
        "TokenService/IntrospectToken": token_service_pb2.IntrospectTokenRequest(token="eyJ.e30.x"),
        "TokenService/RevokeToken": token_service_pb2.RevokeTokenRequest(token="eyJ.e30.x"),
        "TokenService/RotateSigningKey": token_service_pb2.RotateSigningKeyRequest(algorithm="ES256"),
    }
    return requests[rpc]


def oversize_cases(descriptor: Descriptor, prefix: str = "") -> Iterator[tuple[str, Mutation]]:
    """``(field path, mutation)``: each mutation makes one field of a message too long or too many."""
    for field in descriptor.fields:
        path = prefix + field.name
        if field.type == FieldDescriptor.TYPE_STRING:
            too_long = "a" * (max_length(field) + 1)
            if field.is_repeated:
                yield path, _replace(field.name, ["a"] * (MAX_ITEMS + 1))
                yield f"{path}[0]", _replace(field.name, [too_long])
            else:
                yield path, _assign(field.name, too_long)
        elif field.message_type is not None:
            if field.is_repeated:
                yield path, _add(field.name, MAX_ITEMS + 1)
                for inner, mutate in oversize_cases(field.message_type, f"{path}[0]."):
                    yield inner, _in_first(field.name, mutate)
            else:
                for inner, mutate in oversize_cases(field.message_type, f"{path}."):
                    yield inner, _in_field(field.name, mutate)
        elif field.is_repeated:
            yield path, _replace(field.name, [0] * (MAX_ITEMS + 1))


def _assign(name: str, value: Any) -> Mutation:
    return lambda message: setattr(message, name, value)


def _replace(name: str, values: list[Any]) -> Mutation:
    def mutate(message: Message) -> None:
        del getattr(message, name)[:]
        getattr(message, name).extend(values)

    return mutate


def _add(name: str, count: int) -> Mutation:
    def mutate(message: Message) -> None:
        for _ in range(count):
            getattr(message, name).add()

    return mutate


def _in_first(name: str, inner: Mutation) -> Mutation:
    def mutate(message: Message) -> None:
        children = getattr(message, name)
        inner(children[0] if len(children) else children.add())

    return mutate


def _in_field(name: str, inner: Mutation) -> Mutation:
    return lambda message: inner(getattr(message, name))


CASES = [
    (rpc, path, mutate)
    for rpc, method in METHODS.items()
    for path, mutate in oversize_cases(method.input_type)
]


def call(world: World, rpc: str, request: Message) -> Any:
    """Call ``rpc`` as the platform admin (token and check RPCs ignore the credential)."""
    service, name = rpc.split("/")
    method = METHODS[rpc]
    multicallable = (
        world.harness.channel.unary_stream if method.server_streaming else world.harness.channel.unary_unary
    )(
        f"/identity.v1.{service}/{name}",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=lambda data: data,
    )
    answer = multicallable(request, metadata=world.md, timeout=10)
    return next(answer) if method.server_streaming else answer


def test_the_cases_cover_every_request_field() -> None:
    paths = {(rpc, path) for rpc, path, _ in CASES}
    assert ("KeyService/CreateKey", "display_name") in paths
    assert ("KeyService/UpdateKey", "update_mask.paths") in paths
    assert ("AuthorizationService/BatchCheck", "items[0].permissions") in paths
    assert ("AuthorizationService/BatchCheck", "items[0].resource.id") in paths
    assert set(METHODS) == {rpc for rpc, *_ in CASES} | {
        "AuthorizationService/WhoAmI",
        "TokenService/GetJwks",
    }


def test_only_documented_fields_may_exceed_the_general_string_limit() -> None:
    longer = set()
    for method in METHODS.values():
        for field in _string_fields(method.input_type):
            if max_length(field) > MAX_STRING:
                longer.add(field.full_name)
    assert longer == LONGER


def _string_fields(descriptor: Descriptor, seen: frozenset[str] = frozenset()) -> Iterator[FieldDescriptor]:
    for field in descriptor.fields:
        if field.type == FieldDescriptor.TYPE_STRING:
            yield field
        elif field.message_type is not None and field.message_type.full_name not in seen:
            yield from _string_fields(field.message_type, seen | {descriptor.full_name})


@pytest.mark.parametrize("rpc", sorted(METHODS))
def test_the_baselines_are_valid(world: World, rpc: str) -> None:
    try:
        call(world, rpc, baseline(world, rpc))
    except grpc.RpcError as error:
        assert error.code() != grpc.StatusCode.INVALID_ARGUMENT, details_of(error)


@pytest.mark.parametrize("rpc", sorted({rpc for rpc, *_ in CASES}))
def test_every_oversize_field_is_refused_by_name(world: World, rpc: str) -> None:
    for case_rpc, path, mutate in CASES:
        if case_rpc != rpc:
            continue
        request = baseline(world, rpc)
        mutate(request)
        assert request.ByteSize() < 64 * 1024, f"{path}: the case must fit the message size limit"
        refused(world, lambda request=request: call(world, rpc, request), path, path)  # type: ignore[misc]


def test_a_request_over_64_kib_is_refused_before_any_handler(world: World) -> None:
    # gRPC's core refuses it while reading, so no handler runs: the status carries grpcio's own
    # message and no ErrorInfo (the one exception to API.md's rule, and nothing changed).
    request = key_service_pb2.CreateKeyRequest(
        org_id=world.org_id,
        principal_id=world.principal_id,
        display_name="k",
        scopes=["inventory:read"],
        description="d" * (64 * 1024),
    )
    before = table_rows(world.harness.db.engine, (*BUSINESS_TABLES, "audit_events"))
    with pytest.raises(grpc.RpcError) as raised:
        world.admin.keys.CreateKey(request, metadata=world.md)
    error = raised.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
    assert "Received message larger than max (" in error.details(), error.details()
    assert error.details().endswith(" vs. 65536)"), error.details()
    world.harness.server.writer.flush()
    assert table_rows(world.harness.db.engine, (*BUSINESS_TABLES, "audit_events")) == before
    # Exactly at the limit, the request reaches the service, which judges its fields.
    request.description = ""
    request.description = "d" * (65536 - request.ByteSize() - 4)  # 4: the field's tag and length
    assert request.ByteSize() == 65536
    refused(world, lambda: world.admin.keys.CreateKey(request, metadata=world.md), "description")


def test_token_rpcs_name_their_own_fields(world: World) -> None:
    tokens = token_service_pb2_grpc.TokenServiceStub(world.harness.channel)
    credentials = token_service_pb2.ExchangeClientCredentialsRequest(
        grant_type="client_credentials",
        client_id=world.key.id,
        client_secret=world.api_key,
        org_id=world.org_id,
        scope="inventory:read Inventory:Write",
    )
    refused(world, lambda: tokens.ExchangeClientCredentials(credentials), "scope")
    credentials.scope, credentials.client_id = "inventory:read", "k" * 65
    refused(world, lambda: tokens.ExchangeClientCredentials(credentials), "client_id")
    password = token_service_pb2.ExchangePasswordRequest(
        username=world.principal_id, password="p" * 16, client_id="", client_secret=world.api_key
    )
    refused(world, lambda: tokens.ExchangePassword(password), "client_id")
    with_id = token_service_pb2.ExchangeApiKeyWithIdRequest(api_key=world.api_key, scopes=["a", "B"])
    refused(world, lambda: tokens.ExchangeApiKeyWithId(with_id), "scopes[1]")
    rotate = token_service_pb2.RotateSigningKeyRequest(algorithm="HS256")
    refused(world, lambda: tokens.RotateSigningKey(rotate, metadata=world.md), "algorithm")
