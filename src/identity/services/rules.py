"""Every RPC's auth requirement, in one table.

A test walks the service descriptors so that an RPC without an entry fails the build; the
interceptor refuses any identity.v1 RPC missing here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    """What an RPC needs from its caller, and the audit action name of a mutation."""

    authenticated: bool
    scope: str | None = None
    action: str | None = None


PUBLIC = Rule(authenticated=False)
ANY_CALLER = Rule(authenticated=True)


def admin(scope: str, action: str | None = None) -> Rule:
    """An admin RPC: an authenticated caller holding ``scope``."""
    return Rule(authenticated=True, scope=scope, action=action)


_ORG = "/identity.v1.OrganizationService/"
_PRINCIPAL = "/identity.v1.PrincipalService/"
_KEY = "/identity.v1.KeyService/"
_TOKEN = "/identity.v1.TokenService/"
_AUTHZ = "/identity.v1.AuthorizationService/"
_AUDIT = "/identity.v1.AuditService/"

RULES: dict[str, Rule] = {
    _ORG + "CreateOrganization": admin("admin:organizations", "organization.create"),
    _ORG + "GetOrganization": admin("admin:organizations"),
    _ORG + "ListOrganizations": admin("admin:organizations"),
    _ORG + "UpdateOrganization": admin("admin:organizations", "organization.update"),
    _PRINCIPAL + "CreatePrincipal": admin("admin:users", "principal.create"),
    _PRINCIPAL + "GetPrincipal": admin("admin:users"),
    _PRINCIPAL + "ListPrincipals": admin("admin:users"),
    _PRINCIPAL + "UpdatePrincipal": admin("admin:users", "principal.update"),
    _PRINCIPAL + "SetPrincipalPassword": admin("admin:users", "principal.set_password"),
    _KEY + "CreateKey": admin("admin:apikeys", "key.create"),
    _KEY + "GetKey": admin("admin:apikeys"),
    _KEY + "ListKeys": admin("admin:apikeys"),
    _KEY + "UpdateKey": admin("admin:apikeys", "key.update"),
    _KEY + "RotateKey": admin("admin:apikeys", "key.rotate"),
    _KEY + "RevokeKey": admin("admin:apikeys", "key.revoke"),
    _KEY + "DeleteKey": admin("admin:apikeys", "key.delete"),
    _KEY + "ListExpiringKeys": admin("admin:apikeys"),
    _KEY + "WatchKeyEvents": admin("admin:apikeys"),
    _TOKEN + "ExchangeApiKey": PUBLIC,
    _TOKEN + "ExchangeApiKeyWithId": PUBLIC,
    _TOKEN + "ExchangeClientCredentials": PUBLIC,
    _TOKEN + "ExchangePassword": PUBLIC,
    _TOKEN + "GetJwks": PUBLIC,
    _TOKEN + "IntrospectToken": PUBLIC,
    _TOKEN + "RevokeToken": PUBLIC,
    _TOKEN + "RotateSigningKey": admin("*", "signing_key.rotate"),
    _AUTHZ + "Check": PUBLIC,
    _AUTHZ + "BatchCheck": PUBLIC,
    _AUTHZ + "WhoAmI": ANY_CALLER,
    _AUDIT + "ListAuditEvents": admin("read:audit"),
    # Envoy's external authorization API: the gateway passes the credential to judge.
    "/envoy.service.auth.v3.Authorization/Check": PUBLIC,
}

# Tried on the event loop first (see identity.services.loop): with a warm credential they need
# neither the database nor argon2. Each does nothing observable before its first wait, so it may
# run again from the start on a request thread.
HOT_METHODS = frozenset(
    {
        _AUTHZ + "Check",
        _AUTHZ + "BatchCheck",
        _AUTHZ + "WhoAmI",
        "/envoy.service.auth.v3.Authorization/Check",
        _TOKEN + "ExchangeApiKey",
        _TOKEN + "ExchangeApiKeyWithId",
        _TOKEN + "ExchangeClientCredentials",
        _TOKEN + "IntrospectToken",
    }
)
