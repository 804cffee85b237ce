"""Token exchange end to end: every flow, tokens verified offline by an independent JOSE library
(joserfc) from GetJwks alone, introspection, revocation and signing-key rotation."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet

from identity.v1 import (
    audit_service_pb2,
    key_service_pb2,
    organization_service_pb2,
    principal_service_pb2,
    token_service_pb2,
    token_service_pb2_grpc,
)
from tests.conftest import Harness
from tests.helpers import Admin, expect_error, mistyped

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED


class Tenant:
    """An organization with a service account and a key of scopes ``inventory:read inventory:write``."""

    def __init__(self, harness: Harness, **key_fields: Any) -> None:
        self.harness = harness
        self.platform = harness.admin()
        self.org_id = self.platform.create_org("Tokens Inc").id
        self.principal_id = self.platform.create_principal(self.org_id).id
        created = self.platform.create_key(
            self.org_id, self.principal_id, ["inventory:read", "inventory:write"], **key_fields
        )
        self.key = created.key
        self.api_key = created.api_key
        self.tokens = token_service_pb2_grpc.TokenServiceStub(harness.channel)

    def v2(self, **fields: Any) -> token_service_pb2.ExchangeApiKeyResponse:
        fields.setdefault("api_key", self.api_key)
        return self.tokens.ExchangeApiKey(token_service_pb2.ExchangeApiKeyRequest(**fields))

    def jwks(self) -> KeySet:
        return KeySet.import_key_set(
            json.loads(self.tokens.GetJwks(token_service_pb2.GetJwksRequest()).jwks_json)
        )

    def introspect(self, token: str) -> token_service_pb2.IntrospectTokenResponse:
        return self.tokens.IntrospectToken(token_service_pb2.IntrospectTokenRequest(token=token))


@pytest.fixture
def tenant(harness: Harness) -> Tenant:
    return Tenant(harness)


def verify_offline(tenant: Tenant, token: str) -> dict[str, Any]:
    """Verify with joserfc and nothing but the published JWK Set; return the claims."""
    decoded = jose_jwt.decode(token, tenant.jwks(), algorithms=["ES256"])
    assert decoded.header["typ"] == "at+jwt" and decoded.header["kid"].startswith("sk_")
    jose_jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": "identity"}, aud={"essential": True, "value": "identity"}
    ).validate(decoded.claims)
    return dict(decoded.claims)


def test_v2_exchange_mints_an_rfc9068_token(tenant: Tenant) -> None:
    reply = tenant.v2()
    assert reply.token_type == "Bearer" and 890 <= reply.expires_in <= 900
    assert reply.key_id == tenant.key.id and reply.org_id == tenant.org_id
    assert list(reply.scopes) == ["inventory:read", "inventory:write"]
    claims = verify_offline(tenant, reply.access_token)
    assert claims["sub"] == tenant.principal_id and claims["client_id"] == tenant.key.id
    assert claims["org_id"] == tenant.org_id and claims["scope"] == "inventory:read inventory:write"
    assert claims["exp"] - claims["iat"] == reply.expires_in and claims["nbf"] == claims["iat"]
    assert claims["jti"] and claims["exp"] == reply.expire_time.seconds
    introspected = tenant.introspect(reply.access_token)
    assert (
        introspected.active and introspected.sub == tenant.principal_id and introspected.jti == claims["jti"]
    )


def test_v2_takes_the_key_from_metadata(tenant: Tenant) -> None:
    reply = tenant.tokens.ExchangeApiKey(
        token_service_pb2.ExchangeApiKeyRequest(), metadata=(("x-api-key", tenant.api_key),)
    )
    assert verify_offline(tenant, reply.access_token)["client_id"] == tenant.key.id


def test_v3_needs_the_matching_key_id(tenant: Tenant) -> None:
    reply = tenant.tokens.ExchangeApiKeyWithId(
        token_service_pb2.ExchangeApiKeyWithIdRequest(key_id=tenant.key.id, api_key=tenant.api_key)
    )
    assert verify_offline(tenant, reply.access_token)["client_id"] == tenant.key.id
    from_metadata = tenant.tokens.ExchangeApiKeyWithId(
        token_service_pb2.ExchangeApiKeyWithIdRequest(),
        metadata=(("x-api-key-id", tenant.key.id), ("x-api-key", tenant.api_key)),
    )
    assert from_metadata.key_id == tenant.key.id
    other = tenant.platform.create_key(tenant.org_id, tenant.principal_id, ["inventory:read"]).key
    expect_error(
        lambda: tenant.tokens.ExchangeApiKeyWithId(
            token_service_pb2.ExchangeApiKeyWithIdRequest(key_id=other.id, api_key=tenant.api_key)
        ),
        UNAUTHENTICATED,
        "INVALID_API_KEY",
    )


def test_client_credentials(tenant: Tenant) -> None:
    request = token_service_pb2.ExchangeClientCredentialsRequest(
        grant_type="client_credentials",
        client_id=tenant.key.id,
        client_secret=tenant.api_key,
        org_id=tenant.org_id,
        scope="inventory:read",
    )
    reply = tenant.tokens.ExchangeClientCredentials(request)
    assert verify_offline(tenant, reply.access_token)["scope"] == "inventory:read"
    wrong_grant = token_service_pb2.ExchangeClientCredentialsRequest(grant_type="password")
    details = expect_error(
        lambda: tenant.tokens.ExchangeClientCredentials(wrong_grant),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    assert details.fields == ["grant_type"]
    request.org_id = tenant.harness.platform_org_id
    expect_error(lambda: tenant.tokens.ExchangeClientCredentials(request), UNAUTHENTICATED, "INVALID_API_KEY")


def test_legacy_password_flow(tenant: Tenant) -> None:
    account = tenant.platform.create_principal(tenant.org_id, name="legacy").id
    password = "correct horse battery staple"
    tenant.platform.principals.SetPrincipalPassword(
        principal_service_pb2.SetPrincipalPasswordRequest(principal_id=account, password=password),
        metadata=tenant.platform.metadata,
    )
    request = token_service_pb2.ExchangePasswordRequest(
        username=account, password=password, client_id=tenant.key.id, client_secret=tenant.api_key
    )
    reply = tenant.tokens.ExchangePassword(request)
    assert verify_offline(tenant, reply.access_token)["sub"] == account
    request.password = "wrong horse battery staple"
    expect_error(lambda: tenant.tokens.ExchangePassword(request), UNAUTHENTICATED, "INVALID_API_KEY")
    tenant.harness.server.writer.flush()  # exchanges are audited in batches off the request path
    events = tenant.platform.audit.ListAuditEvents(
        audit_service_pb2.ListAuditEventsRequest(org_id=tenant.org_id, action="token.exchange"),
        metadata=tenant.platform.metadata,
    ).events
    v1 = [e for e in events if e.details["flow"] == "v1"]
    assert [e.outcome for e in v1] == [
        audit_service_pb2.AUDIT_OUTCOME_FAILURE,
        audit_service_pb2.AUDIT_OUTCOME_SUCCESS,
    ]
    assert all(e.details["deprecated"] == "true" for e in v1)
    descriptor = token_service_pb2.DESCRIPTOR.services_by_name["TokenService"].methods_by_name[
        "ExchangePassword"
    ]
    assert descriptor.GetOptions().deprecated


def test_require_key_id_refuses_v2(harness: Harness) -> None:
    tenant = Tenant(harness, require_key_id=True)
    expect_error(tenant.v2, UNAUTHENTICATED, "INVALID_API_KEY")
    reply = tenant.tokens.ExchangeApiKeyWithId(
        token_service_pb2.ExchangeApiKeyWithIdRequest(key_id=tenant.key.id, api_key=tenant.api_key)
    )
    assert reply.key_id == tenant.key.id


def test_down_scoping_and_lifetime(tenant: Tenant) -> None:
    reply = tenant.v2(scopes=["inventory:read"], lifetime=Duration(seconds=60))
    assert list(reply.scopes) == ["inventory:read"] and reply.expires_in == 60
    expect_error(
        lambda: tenant.v2(scopes=["billing:read"]), grpc.StatusCode.PERMISSION_DENIED, "INSUFFICIENT_SCOPE"
    )
    details = expect_error(
        lambda: tenant.v2(lifetime=Duration(seconds=3601)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    assert details.fields == ["lifetime"]
    details = expect_error(
        lambda: tenant.v2(audience="elsewhere"), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"
    )
    assert details.fields == ["audience"]


def test_revoked_expired_and_wrong_keys_get_their_reasons(harness: Harness, tenant: Tenant) -> None:
    expect_error(lambda: tenant.v2(api_key="idk_live_nonsense"), UNAUTHENTICATED, "INVALID_API_KEY")
    expect_error(lambda: tenant.v2(api_key=""), UNAUTHENTICATED, "INVALID_API_KEY")
    admin = tenant.platform
    admin.keys.RevokeKey(key_service_pb2.RevokeKeyRequest(key_id=tenant.key.id), metadata=admin.metadata)
    expect_error(tenant.v2, UNAUTHENTICATED, "REVOKED_API_KEY")


def test_inactive_organization_and_disabled_principal(tenant: Tenant) -> None:
    admin = tenant.platform
    token = tenant.v2().access_token
    admin.principals.UpdatePrincipal(
        principal_service_pb2.UpdatePrincipalRequest(
            principal=principal_service_pb2.Principal(
                id=tenant.principal_id, state=principal_service_pb2.PRINCIPAL_STATE_DISABLED
            ),
            update_mask=FieldMask(paths=["state"]),
        ),
        metadata=admin.metadata,
    )
    expect_error(tenant.v2, grpc.StatusCode.PERMISSION_DENIED, "DISABLED_PRINCIPAL")
    assert not tenant.introspect(token).active
    admin.orgs.UpdateOrganization(
        organization_service_pb2.UpdateOrganizationRequest(
            organization=organization_service_pb2.Organization(
                id=tenant.org_id, state=organization_service_pb2.ORGANIZATION_STATE_INACTIVE
            ),
            update_mask=FieldMask(paths=["state"]),
        ),
        metadata=admin.metadata,
    )
    expect_error(tenant.v2, grpc.StatusCode.PERMISSION_DENIED, "INACTIVE_ORGANIZATION")


def test_revoking_the_key_stops_its_tokens(tenant: Tenant) -> None:
    token = tenant.v2().access_token
    assert tenant.introspect(token).active
    tenant.platform.keys.RevokeKey(
        key_service_pb2.RevokeKeyRequest(key_id=tenant.key.id), metadata=tenant.platform.metadata
    )
    assert tenant.introspect(token) == token_service_pb2.IntrospectTokenResponse(active=False)


def test_rotation_past_grace_stops_old_tokens(tenant: Tenant) -> None:
    old_token = tenant.v2().access_token
    admin = tenant.platform
    rotated = admin.keys.RotateKey(
        key_service_pb2.RotateKeyRequest(key_id=tenant.key.id, grace_period=Duration(seconds=1)),
        metadata=admin.metadata,
    )
    assert tenant.introspect(old_token).active, "tokens of the old secret live through the grace period"
    new_token = tenant.v2(api_key=rotated.api_key).access_token
    time.sleep(1.2)
    assert not tenant.introspect(old_token).active
    assert tenant.introspect(new_token).active


def test_revoke_token_by_jti(tenant: Tenant) -> None:
    token = tenant.v2().access_token
    other = tenant.v2().access_token
    tenant.tokens.RevokeToken(token_service_pb2.RevokeTokenRequest(token=token))
    assert not tenant.introspect(token).active
    assert tenant.introspect(other).active
    # RFC 7009: revoking garbage is not an error.
    tenant.tokens.RevokeToken(token_service_pb2.RevokeTokenRequest(token="not-a-token"))


def test_signing_key_rotation_keeps_old_tokens_valid(tenant: Tenant) -> None:
    before = tenant.v2().access_token
    old_kid = jose_jwt.decode(before, tenant.jwks()).header["kid"]
    admin = tenant.platform
    rotated = tenant.tokens.RotateSigningKey(
        token_service_pb2.RotateSigningKeyRequest(), metadata=admin.metadata
    )
    assert rotated.kid != old_kid and rotated.algorithm == "ES256"
    after = tenant.v2().access_token
    assert jose_jwt.decode(after, tenant.jwks()).header["kid"] == rotated.kid
    kids = {key.kid for key in tenant.jwks().keys}
    assert {old_kid, rotated.kid} <= kids
    assert verify_offline(tenant, before)["sub"] == verify_offline(tenant, after)["sub"]
    assert tenant.introspect(before).active and tenant.introspect(after).active
    tenant_admin = Admin(
        tenant.harness.channel,
        tenant.platform.create_key(tenant.org_id, tenant.principal_id, ["inventory:read"]).api_key,
    )
    expect_error(
        lambda: tenant.tokens.RotateSigningKey(
            token_service_pb2.RotateSigningKeyRequest(), metadata=tenant_admin.metadata
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "INSUFFICIENT_SCOPE",
    )


def test_jwks_holds_public_keys_only(tenant: Tenant) -> None:
    document = json.loads(tenant.tokens.GetJwks(token_service_pb2.GetJwksRequest()).jwks_json)
    assert document["keys"]
    for key in document["keys"]:
        assert "d" not in key and key["kty"] == "EC" and key["alg"] == "ES256" and key["use"] == "sig"


def test_a_token_is_a_caller_credential_for_admin_rpcs(tenant: Tenant) -> None:
    platform_token = tenant.tokens.ExchangeApiKey(
        token_service_pb2.ExchangeApiKeyRequest(api_key=tenant.harness.platform_key)
    ).access_token
    as_token = Admin(tenant.harness.channel, platform_token)
    listed = as_token.keys.ListKeys(
        key_service_pb2.ListKeysRequest(org_id=tenant.org_id), metadata=as_token.metadata
    )
    assert [k.id for k in listed.keys] == [tenant.key.id]


def test_every_exchange_is_audited(tenant: Tenant) -> None:
    tenant.v2()
    expect_error(lambda: tenant.v2(api_key=mistyped(tenant.api_key)), UNAUTHENTICATED, "INVALID_API_KEY")
    tenant.harness.server.writer.flush()  # exchanges are audited in batches off the request path
    events = tenant.platform.audit.ListAuditEvents(
        audit_service_pb2.ListAuditEventsRequest(action="token.exchange"), metadata=tenant.platform.metadata
    ).events
    success = [
        e
        for e in events
        if e.outcome == audit_service_pb2.AUDIT_OUTCOME_SUCCESS and e.target == tenant.key.id
    ]
    failure = [e for e in events if e.reason == "INVALID_API_KEY"]
    assert len(success) == 1 and success[0].details["flow"] == "v2" and success[0].peer.startswith("ipv")
    assert success[0].actor_key_id == tenant.key.id and success[0].user_agent.startswith("grpc-python")
    assert len(failure) == 1 and failure[0].details["flow"] == "v2" and tenant.api_key not in str(failure[0])


def median_ms(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[len(ordered) // 2] * 1000


# Every attempt here fails: lift the failed-attempt throttle so that argon2 runs each time.
@pytest.mark.settings(failed_attempts_per_key=10_000, failed_attempts_per_peer=10_000)
def test_unknown_key_id_and_wrong_secret_are_indistinguishable(tenant: Tenant) -> None:
    from identity.crypto import apikeys

    parsed = apikeys.parse(tenant.api_key)
    assert parsed is not None
    wrong_secret = apikeys.generate(parsed.kind, parsed.environment, parsed.lookup).plaintext
    unknown = apikeys.generate(parsed.kind, parsed.environment).plaintext

    def attempt(key_id: str, api_key: str) -> Callable[[], object]:
        request = token_service_pb2.ExchangeApiKeyWithIdRequest(key_id=key_id, api_key=api_key)
        return lambda: tenant.tokens.ExchangeApiKeyWithId(request)

    cases = {
        "unknown id": attempt("key_01unknownunknownunknown0", unknown),
        "wrong secret": attempt(tenant.key.id, wrong_secret),
    }
    timings: dict[str, list[float]] = {name: [] for name in cases}
    answers = set()
    for _ in range(200):
        for name, call in cases.items():
            started = time.perf_counter()
            details = expect_error(call, UNAUTHENTICATED, "INVALID_API_KEY")
            timings[name].append(time.perf_counter() - started)
            answers.add((details.code, details.message))
    assert len(answers) == 1
    unknown_ms, wrong_ms = median_ms(timings["unknown id"]), median_ms(timings["wrong secret"])
    assert abs(unknown_ms - wrong_ms) <= 0.10 * max(unknown_ms, wrong_ms), (unknown_ms, wrong_ms)
