"""Offline verification of identity access tokens against a published JWK Set (PyJWT).

The algorithm is pinned to the JWK the token's ``kid`` names; the header must carry only
``alg``, ``typ`` (``at+jwt``) and ``kid``; ``iss``, ``aud``, ``exp`` and ``nbf`` are checked.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import jwt

from identity.client.identity import Identity
from identity.domain import scopes as scope_rules
from identity.tokens import decode_verified, invalid_token

DEFAULT_ISSUER = "identity"
DEFAULT_AUDIENCE = "identity"


def parse_jwks(text: str) -> dict[str, jwt.PyJWK]:
    """The signature keys of an RFC 7517 JWK Set by ``kid``; keys without kid or alg are skipped."""
    keys: dict[str, jwt.PyJWK] = {}
    for entry in json.loads(text).get("keys", []):
        if (
            isinstance(entry, dict)
            and entry.get("kid")
            and entry.get("alg")
            and entry.get("use", "sig") == "sig"
        ):
            keys[str(entry["kid"])] = jwt.PyJWK(entry)
    return keys


def verify(token: str, key: jwt.PyJWK | None, issuer: str, audience: str) -> Identity:
    """Verify ``token`` with ``key`` (the JWK its kid names, None if unknown) and return its identity."""
    if key is None:
        raise invalid_token()
    return identity_of(decode_verified(token, key.key, key.algorithm_name, issuer, [audience]))


def identity_of(claims: dict[str, Any]) -> Identity:
    """The identity the verified ``claims`` describe; INVALID_TOKEN when a claim is missing or mistyped."""
    fields = [claims.get(name) for name in ("sub", "org_id", "client_id", "scope", "jti")]
    if not all(isinstance(f, str) for f in fields) or not isinstance(claims.get("exp"), int):
        raise invalid_token()
    subject, org_id, key_id, scope, jti = (str(f) for f in fields)
    granted = tuple(scope.split())
    return Identity(
        principal_id=subject,
        org_id=org_id,
        key_id=key_id,
        scopes=granted,
        rate_tier=scope_rules.rate_tier(granted),
        expire_time=datetime.fromtimestamp(claims["exp"], UTC),
        token_id=jti,
    )
