"""Write the seed corpus: a valid request for every RPC (with each kind of caller) and real credentials.

``.venv/bin/python -m fuzz.seeds`` rewrites the ``seed-*`` files of ``fuzz/corpus/``; files the
fuzzer found (``crash-*``, ``found-*``) stay. Requests are filled by field name, so an RPC added
later gets a seed without an edit here; EXTRA adds richer requests for some.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message

from fuzz import credentials, rpc
from fuzz.common import request_class

CORPUS = Path(__file__).parent / "corpus"
# Field name -> a value that reaches past validation; ids by the service that owns them.
BY_NAME: dict[str, Any] = {
    "org_id": "$ORG",
    "principal_id": "$PRINCIPAL",
    "key_id": "$KEY_ID",
    "credential": "$PLATFORM_KEY",
    "api_key": "$PLATFORM_KEY",
    "client_secret": "$PLATFORM_KEY",
    "client_id": "$KEY_ID",
    "token": "$PLATFORM_TOKEN",
    "username": "$PRINCIPAL",
    "password": "correct horse battery",
    "display_name": "fuzz",
    "grant_type": "client_credentials",
    "scopes": ["inventory:read"],
    "permissions": ["inventory:read"],
    "ttl_days": 30,
    "page_size": 2,
}
# Seeds of RPCs that use up the world's sandbox key or token sort last, so a replay reaches them last.
LAST = {"DeleteKey", "RevokeKey", "RevokeToken"}
ID_OF_SERVICE = {"OrganizationService": "$ORG", "PrincipalService": "$PRINCIPAL", "KeyService": "$KEY_ID"}
EXTRA: dict[str, list[dict[str, Any]]] = {
    "identity.v1.AuthorizationService.Check": [
        {"credential": "$TENANT_KEY", "permissions": ["inventory:read", "admin:users"]},
        {"credential": "$TENANT_KEY", "permissions": ["inventory:write"], "client_ip": "10.0.0.1"},
        {"credential": "$PLATFORM_TOKEN", "permissions": ["x:y"], "resource": {"type": "site", "id": "w_1"}},
        {"credential": "$PLATFORM_KEYx", "permissions": ["inventory:read"]},
        {"credential": "idk_live_nope", "permissions": ["inventory:read"]},
        {"credential": "$PLATFORM_TOKEN.", "permissions": ["inventory:read"]},
    ],
    "identity.v1.AuthorizationService.BatchCheck": [
        {
            "credential": "$TENANT_KEY",
            "items": [{"permissions": ["inventory:read"]}, {"permissions": ["a:*"]}],
        },
        {"credential": " $TENANT_KEY", "items": [{"permissions": ["inventory:read"]}]},
    ],
    "envoy.service.auth.v3.Authorization.Check": [
        {
            "attributes": {
                "request": {"http": {"headers": {"authorization": f"Bearer {credential}"}}},
                "context_extensions": {"permission": "inventory:read", "resource_type": "site"},
                "source": {"address": {"socket_address": {"address": "10.1.2.3"}}},
            }
        }
        for credential in ("$TENANT_KEY", "$PLATFORM_TOKEN", "idk_live_nope")
    ]
    + [
        {
            "attributes": {
                "request": {"http": {"headers": {"X-Api-Key": "$PLATFORM_KEY"}}},
                "context_extensions": {"permission": "admin:users"},
            }
        }
    ],
    "identity.v1.KeyService.CreateKey": [
        {
            "org_id": "$ORG",
            "principal_id": "$USER",
            "scopes": ["track:events"],
            "kind": "KEY_KIND_PUBLISHABLE",
            "resources": [{"type": "website", "id": "w_1"}],
            "allowed_cidrs": ["10.0.0.0/8"],
            "expire_time": "2030-01-01T00:00:00Z",
            "request_id": "r1",
            "environment": "test",
        },
    ],
    "identity.v1.KeyService.UpdateKey": [
        {
            "key": {"id": "$KEY_ID", "scopes": ["inventory:read"], "allowed_cidrs": ["::1/128"]},
            "update_mask": "scopes,allowedCidrs",
        },
    ],
    "identity.v1.KeyService.RotateKey": [{"key_id": "$KEY_ID", "grace_period": "3600s"}],
    "identity.v1.KeyService.ListExpiringKeys": [{"org_id": "$ORG", "within": "86400s"}],
    "identity.v1.OrganizationService.UpdateOrganization": [
        {"organization": {"id": "$ORG", "key_policy": {"max_expiry_days": 30}}, "update_mask": "keyPolicy"},
        {
            "organization": {"id": "$ORG", "state": "ORGANIZATION_STATE_ACTIVE", "key_policy": {}},
            "update_mask": "state,keyPolicy.maxKeysPerUser",
        },
    ],
    "identity.v1.PrincipalService.UpdatePrincipal": [
        {"principal": {"id": "$USER", "display_name": "renamed"}, "update_mask": "displayName"},
        {"principal": {"id": "$USER", "state": "PRINCIPAL_STATE_DISABLED"}, "update_mask": "state"},
    ],
    "identity.v1.AuditService.ListAuditEvents": [
        {"org_id": "$ORG", "action": "key.create", "start_time": "2020-01-01T00:00:00Z", "page_token": "x"},
    ],
}


def filled_request(method: MethodDescriptor) -> Message:
    """A request for ``method`` with every field named in BY_NAME set."""
    request = request_class(method)()
    for field in request.DESCRIPTOR.fields:
        value = BY_NAME.get(field.name)
        if field.name == "id":
            value = ID_OF_SERVICE.get(method.containing_service.name)
        if value is None or field.type == FieldDescriptor.TYPE_MESSAGE:
            continue
        if field.is_repeated:
            getattr(request, field.name).extend(value if isinstance(value, list) else [value])
        elif not isinstance(value, list):
            setattr(request, field.name, value)
    return request


def rpc_seeds() -> dict[str, bytes]:
    """File name -> input, for every RPC: a filled request with each real caller and one fuzzed."""
    seeds: dict[str, bytes] = {}
    for method in rpc.identity_rpcs():
        name = f"{'z-' if method.name in LAST else ''}{method.containing_service.name}-{method.name}"
        request = filled_request(method)
        for caller in (0, 1, 3, 4):
            seeds[f"seed-{name}-{caller}"] = rpc.encode(method, caller, request)
        seeds[f"seed-{name}-fuzzed"] = rpc.encode(method, 7, request, b"idk_live_junk")
        for index, extra in enumerate(EXTRA.get(method.full_name, [])):
            message = json_format.ParseDict(extra, request_class(method)())
            seeds[f"seed-{name}-extra{index}"] = rpc.encode(method, 1, message)
    return seeds


def credential_seeds() -> dict[str, bytes]:
    """File name -> input: real credentials, near misses and odd shapes, for every parser."""
    texts = {
        "platform-key": "$PLATFORM_KEY",
        "tenant-key": "$TENANT_KEY",
        "token": "$PLATFORM_TOKEN",
        "bearer-key": "Bearer $PLATFORM_KEY",
        "bearer-token": "bearer   $PLATFORM_TOKEN ",
        "key-plus": "$PLATFORM_KEYx",
        "token-plus": "$PLATFORM_TOKEN.x",
        "alg-none": "eyJhbGciOiJub25lIiwidHlwIjoiYXQrand0In0.e30.",
        "empty": "",
        "basic": "Basic dXNlcjpwYXNz",
    }
    seeds: dict[str, bytes] = {}
    for parser in credentials.PARSERS:
        for label, text in texts.items():
            seeds[f"seed-{parser.__name__.strip('_')}-{label}"] = credentials.encode(parser, text)
    return seeds


def write(target: str, seeds: dict[str, bytes]) -> None:
    """Replace ``target``'s seed files with ``seeds``."""
    directory = CORPUS / target
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("seed-*"):
        old.unlink()
    for name, data in seeds.items():
        (directory / name).write_bytes(data)


if __name__ == "__main__":
    write("rpc", rpc_seeds())
    write("credentials", credential_seeds())
