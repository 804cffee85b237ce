"""Mint and verify RFC 9068 JWT access tokens (the keys live in :mod:`identity.keyring`).

Algorithms are pinned per key: a token is verified only with the algorithm of the key its
``kid`` names, so ``alg: none``, HS256-with-a-public-key and similar tricks fail. Headers that
point elsewhere for keys (``jku``, ``x5u``, ``jwk``, ``x5c``) are refused outright.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import jwt

from identity.crypto.signing import SigningKey
from identity.domain.errors import IdentityError, Reason
from identity.ids import new_id

DEFAULT_LIFETIME = timedelta(minutes=15)
MAX_LIFETIME = timedelta(hours=1)
LEEWAY_SECONDS = 60
MAX_TOKEN_LENGTH = 8192
TOKEN_TYPES = ("at+jwt", "application/at+jwt")
ALLOWED_HEADERS = frozenset({"alg", "typ", "kid"})
_KID = re.compile(r"sk_[0-9a-z]{26}")
# JWS compact serialization: three base64url segments, unpadded (RFC 7515 section 2).
_COMPACT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


def looks_like_jwt(credential: str) -> bool:
    """Whether a credential is meant as a JWT (a JSON header, three parts) rather than an API key."""
    return credential.startswith("eyJ") and credential.count(".") == 2


def invalid_token(message: str = "the token is invalid") -> IdentityError:
    """The one answer for every token that fails verification other than by expiry."""
    return IdentityError(Reason.INVALID_TOKEN, message)


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """What a verified token says."""

    subject: str
    org_id: str
    key_id: str
    key_version: int
    scopes: tuple[str, ...]
    audience: str
    jti: str
    issue_time: datetime
    expire_time: datetime


class KeySource(Protocol):
    """Where signing keys come from (the :class:`identity.keyring.Keyring` of the server)."""

    def current(self) -> SigningKey:
        """The key new tokens are signed with."""
        ...

    def find(self, kid: str) -> SigningKey | None:
        """The published key with this id, or None."""
        ...


class TokenCodec:
    """Mints tokens with the current key and verifies them against the published ones."""

    def __init__(self, keyring: KeySource, issuer: str, audiences: tuple[str, ...]) -> None:
        """Sign as ``issuer``; accept and mint only for ``audiences`` (the first is the default)."""
        self._keyring = keyring
        self.issuer = issuer
        self.audiences = audiences

    def mint(
        self,
        *,
        subject: str,
        org_id: str,
        key_id: str,
        key_version: int,
        scopes: tuple[str, ...],
        audience: str,
        lifetime: timedelta,
        not_after: datetime | None,
    ) -> tuple[str, TokenClaims]:
        """Sign a token living ``lifetime`` (already bounded), never past ``not_after`` (the key's expiry)."""
        key = self._keyring.current()
        # Whole seconds, as JWT times are: exp - iat is then exactly the lifetime granted.
        now = datetime.now(UTC).replace(microsecond=0)
        expire_time = now + lifetime
        if not_after is not None:
            expire_time = min(expire_time, not_after.replace(microsecond=0))
        claims = TokenClaims(
            subject, org_id, key_id, key_version, scopes, audience, new_id("tok"), now, expire_time
        )
        payload = {
            "iss": self.issuer,
            "sub": subject,
            "aud": audience,
            "exp": int(claims.expire_time.timestamp()),
            "iat": int(now.timestamp()),
            "nbf": int(now.timestamp()),
            "jti": claims.jti,
            "client_id": key_id,
            "scope": " ".join(scopes),
            "org_id": org_id,
            "key_version": key_version,
        }
        return compact_jws(key, payload), claims

    def verify(self, token: str) -> TokenClaims:
        """Check signature, algorithm, kid, headers, typ, iss, aud, exp and nbf; return the claims."""
        key = self._keyring.find(token_kid(token))
        if key is None:
            raise invalid_token()
        payload = decode_verified(token, key.public_key, key.algorithm, self.issuer, self.audiences)
        return _claims(payload)


def compact_jws(key: SigningKey, payload: dict[str, Any]) -> str:
    """``payload`` signed by ``key`` in JWS compact serialization, header ``alg``, ``kid``, ``typ: at+jwt``.

    Written out here rather than through ``jwt.encode``: minting is on the exchange hot path,
    and this does half the work (the header segment of a key never changes).
    """
    signing_input = _header_segment(key.algorithm, key.kid) + b"." + _base64url(_json(payload))
    return (signing_input + b"." + _base64url(key.sign(signing_input))).decode()


@functools.lru_cache(maxsize=64)
def _header_segment(algorithm: str, kid: str) -> bytes:
    return _base64url(_json({"alg": algorithm, "kid": kid, "typ": "at+jwt"}))


# One encoder for every token: json.dumps with options builds a new encoder on each call.
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"))


def _json(value: dict[str, Any]) -> bytes:
    return _COMPACT_JSON.encode(value).encode()


def _base64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def token_kid(token: str) -> str:
    """The ``kid`` of a token whose header is acceptable (only alg, typ at+jwt, kid); else INVALID_TOKEN.

    The token must be spelled canonically, so that a valid token has exactly one spelling: the
    signature is the only segment outside the signed bytes, and base64 decoders forgive padding,
    stray characters and the spare bits of its last character, which would give one signature
    many texts (a token that passes under a text no one issued, or escapes a list of texts).
    """
    if len(token) > MAX_TOKEN_LENGTH or not _COMPACT.fullmatch(token):
        raise invalid_token()
    if not _canonical(token.rpartition(".")[2]):
        raise invalid_token()
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        raise invalid_token() from None
    kid = header.get("kid")
    if set(header) - ALLOWED_HEADERS or header.get("typ") not in TOKEN_TYPES:
        raise invalid_token()
    if not isinstance(kid, str) or not _KID.fullmatch(kid):
        raise invalid_token()
    return kid


def _canonical(segment: str) -> bool:
    """Whether ``segment`` is the one base64url spelling of the bytes it decodes to."""
    try:
        data = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except binascii.Error:
        return False
    return _base64url(data) == segment.encode()


def decode_verified(
    token: str, public_key: Any, algorithm: str, issuer: str, audiences: tuple[str, ...] | list[str]
) -> dict[str, Any]:
    """The payload of ``token`` verified with ``public_key`` under the one pinned ``algorithm``.

    Also checks iss, aud, exp and nbf (60 s leeway): EXPIRED_TOKEN past exp, else INVALID_TOKEN.
    """
    if jwt.get_unverified_header(token).get("alg") != algorithm:
        raise invalid_token()
    try:
        payload: dict[str, Any] = jwt.decode(
            token,
            public_key,
            algorithms=[algorithm],
            audience=list(audiences),
            issuer=issuer,
            leeway=LEEWAY_SECONDS,
            options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"]},
        )
    except jwt.ExpiredSignatureError:
        raise IdentityError(Reason.EXPIRED_TOKEN, "the token has expired") from None
    except jwt.InvalidTokenError:
        raise invalid_token() from None
    return payload


def _claims(payload: dict[str, Any]) -> TokenClaims:
    fields = (payload.get("sub"), payload.get("org_id"), payload.get("client_id"), payload.get("scope"))
    version, jti, audience = payload.get("key_version"), payload.get("jti"), payload.get("aud")
    if (
        not all(isinstance(f, str) for f in fields)
        or not isinstance(version, int)
        or not isinstance(jti, str)
    ):
        raise invalid_token()
    subject, org_id, key_id, scope = (str(f) for f in fields)
    return TokenClaims(
        subject=subject,
        org_id=org_id,
        key_id=key_id,
        key_version=version,
        scopes=tuple(scope.split()),
        audience=audience if isinstance(audience, str) else "",
        jti=jti,
        issue_time=datetime.fromtimestamp(payload["iat"], UTC),
        expire_time=datetime.fromtimestamp(payload["exp"], UTC),
    )
