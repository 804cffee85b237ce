"""identity.client offline verification: algorithm pinning, headers, iss/aud/exp, claims."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from identity.client import jwks
from identity.client.checking import decision
from identity.client.permissions import PermissionTable, caller_credential
from identity.domain.errors import IdentityError
from identity.tokens import token_kid
from identity.v1 import authorization_service_pb2, common_pb2

KID = "sk_0123456789abcdefghijklmnop"
PRIVATE = ec.generate_private_key(ec.SECP256R1())
JWKS = json.dumps(
    {
        "keys": [
            {**json.loads(ECAlgorithm.to_jwk(PRIVATE.public_key())), "kid": KID, "alg": "ES256", "use": "sig"}
        ]
    }
)


def token(
    headers: dict[str, Any] | None = None, key: Any = PRIVATE, alg: str = "ES256", **claims: Any
) -> str:
    now = int(time.time())
    payload = {
        "iss": "identity",
        "aud": "identity",
        "sub": "sa_1",
        "org_id": "org_1",
        "client_id": "key_1",
        "scope": "inventory:read rate:premium",
        "jti": "tok_1",
        "iat": now,
        "nbf": now,
        "exp": now + 60,
        **claims,
    }
    return jwt.encode(payload, key, algorithm=alg, headers={"typ": "at+jwt", "kid": KID, **(headers or {})})


def verify(raw: str) -> Any:
    keys = jwks.parse_jwks(JWKS)
    return jwks.verify(raw, keys.get(token_kid(raw)), "identity", "identity")


def reason(raw: str) -> str:
    with pytest.raises(IdentityError) as refused:
        verify(raw)
    return refused.value.reason.value


def test_a_good_token_gives_its_identity() -> None:
    identity = verify(token())
    assert (identity.principal_id, identity.org_id, identity.key_id) == ("sa_1", "org_1", "key_1")
    assert identity.scopes == ("inventory:read", "rate:premium") and identity.rate_tier == "premium"
    assert identity.token_id == "tok_1" and identity.expire_time is not None


# Tokens are made when each test runs, not at collection, so a long suite cannot expire them.
@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda: token(exp=int(time.time()) - 120), "EXPIRED_TOKEN"),
        (lambda: token(iss="elsewhere"), "INVALID_TOKEN"),
        (lambda: token(aud="elsewhere"), "INVALID_TOKEN"),
        (lambda: token(headers={"typ": "JWT"}), "INVALID_TOKEN"),
        (lambda: token(headers={"kid": "sk_unknown"}), "INVALID_TOKEN"),
        (lambda: token(headers={"jku": "https://evil.example/jwks"}), "INVALID_TOKEN"),
        (lambda: token(alg="none", key=None), "INVALID_TOKEN"),
        (lambda: token(alg="HS256", key=b"k" * 32), "INVALID_TOKEN"),
        (lambda: token(scope=7), "INVALID_TOKEN"),
        (lambda: "not.a.token", "INVALID_TOKEN"),
    ],
    ids=["expired", "iss", "aud", "typ", "kid", "jku", "none", "hs256", "scope-type", "garbage"],
)
def test_bad_tokens_are_refused(make: Callable[[], str], expected: str) -> None:
    assert reason(make()) == expected


def test_check_denials_become_errors_and_allows_identities() -> None:
    denied = authorization_service_pb2.CheckResponse(
        allowed=False, reason=common_pb2.DECISION_REASON_RESOURCE_FORBIDDEN, message="nope"
    )
    with pytest.raises(IdentityError) as refused:
        decision(denied)
    assert (refused.value.reason.value, refused.value.status) == ("RESOURCE_FORBIDDEN", "PERMISSION_DENIED")
    with pytest.raises(IdentityError) as odd:
        decision(authorization_service_pb2.CheckResponse(allowed=False))
    assert odd.value.status == "INTERNAL"  # a denial without a reason is still a denial
    allowed = decision(
        authorization_service_pb2.CheckResponse(
            allowed=True,
            principal_id="sa_1",
            granted_scopes=["a:b"],
            rate_tier=authorization_service_pb2.RATE_TIER_PREMIUM,
        )
    )
    assert allowed.principal_id == "sa_1" and allowed.scopes == ("a:b",) and allowed.rate_tier == "premium"


def test_permission_table_and_credentials() -> None:
    table = PermissionTable({"/a.B/C": "x:read", "/a.B/Open": None})
    assert table.required("/a.B/C") == "x:read" and table.required("/a.B/Open") is None
    with pytest.raises(IdentityError):
        table.required("/a.B/Other")
    assert caller_credential((("authorization", "Bearer abc"),)) == "abc"
    assert caller_credential((("x-api-key", "idk"),)) == "idk"
    with pytest.raises(IdentityError) as missing:
        caller_credential(())
    assert missing.value.reason.value == "MISSING_AUTHORIZATION"
