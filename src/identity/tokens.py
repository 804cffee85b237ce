"""Mint and verify RFC 9068 JWT access tokens; the signing keyring that backs them.

Algorithms are pinned per key: a token is verified only with the algorithm of the key its
``kid`` names, so ``alg: none``, HS256-with-a-public-key and similar tricks fail. Headers that
point elsewhere for keys (``jku``, ``x5u``, ``jwk``, ``x5c``) are refused outright.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt

from identity.crypto import signing
from identity.crypto.signing import SigningKey
from identity.domain.errors import IdentityError, Reason
from identity.ids import new_id
from identity.store.database import Database
from identity.store.tokens import TokenRepository

DEFAULT_LIFETIME = timedelta(minutes=15)
MAX_LIFETIME = timedelta(hours=1)
LEEWAY_SECONDS = 60
MAX_TOKEN_LENGTH = 8192
TOKEN_TYPES = ("at+jwt", "application/at+jwt")
ALLOWED_HEADERS = frozenset({"alg", "typ", "kid"})
_KID = re.compile(r"sk_[0-9a-z]{26}")
# How stale the keyring may get: another replica's rotation is seen within this.
KEYRING_REFRESH_SECONDS = 10.0
# An unknown kid triggers a reload at most this often, so absurd kids cannot flood the database.
UNKNOWN_KID_RELOAD_SECONDS = 1.0


def looks_like_jwt(credential: str) -> bool:
    """Whether a credential is meant as a JWT (a JSON header, three parts) rather than an API key."""
    return credential.startswith("eyJ") and credential.count(".") == 2


def invalid_token(message: str = "the token is invalid") -> IdentityError:
    """The one answer for every token that fails verification other than by expiry."""
    return IdentityError(Reason.INVALID_TOKEN, message)


@dataclass(frozen=True)
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


class Keyring:
    """The signing keys of the service, unsealed once per process and refreshed lazily."""

    def __init__(self, db: Database, kek: bytes, algorithm: str) -> None:
        """Load keys from ``db``, unsealing them with ``kek``; new keys use ``algorithm``."""
        if algorithm not in signing.ALGORITHMS:
            raise SystemExit(f"IDENTITY_SIGNING_ALGORITHM must be one of {', '.join(signing.ALGORITHMS)}")
        self._db = db
        self._kek = kek
        self._algorithm = algorithm
        self._lock = threading.Lock()
        self._keys: dict[str, SigningKey] = {}
        self._jwks: list[dict[str, Any]] = []
        self._current: SigningKey | None = None
        self._loaded_at = 0.0

    def current(self) -> SigningKey:
        """The key new tokens are signed with; created on first use if the database has none."""
        if self._current is None or time.monotonic() - self._loaded_at > KEYRING_REFRESH_SECONDS:
            self._reload()
        if self._current is None:
            self.rotate(self._algorithm)
        assert self._current is not None
        return self._current

    def find(self, kid: str) -> SigningKey | None:
        """The published key with this id, reloading (rate-limited) when it is not known yet."""
        key = self._keys.get(kid)
        if key is None and time.monotonic() - self._loaded_at > UNKNOWN_KID_RELOAD_SECONDS:
            self._reload()
            key = self._keys.get(kid)
        return key

    def jwks(self) -> dict[str, Any]:
        """The RFC 7517 JWK Set of every published public key (a first key is made if none exists)."""
        self._reload()
        if self._current is None:
            self.rotate(self._algorithm)
        return {"keys": list(self._jwks)}

    def rotate(self, algorithm: str | None = None) -> SigningKey:
        """Make a new key current; old keys stay published until their tokens have expired."""
        algorithm = algorithm or self._algorithm
        if algorithm not in signing.ALGORITHMS:
            raise IdentityError(
                Reason.INVALID_ARGUMENT, f"algorithm must be one of {', '.join(signing.ALGORITHMS)}"
            )
        key = signing.generate(new_id("sk"), algorithm)
        now = datetime.now(UTC)
        with self._db.write() as session:
            TokenRepository(session).add_signing_key(
                key.kid,
                algorithm,
                key.public_jwk(),
                signing.seal(key, self._kek),
                now,
                publish_until=now + MAX_LIFETIME + timedelta(seconds=LEEWAY_SECONDS),
            )
        self._reload()
        return key

    def _reload(self) -> None:
        with self._db.read() as session:
            rows = TokenRepository(session).signing_keys(datetime.now(UTC))
            loaded = [
                (r.kid, r.algorithm, r.sealed_private_key, r.public_jwk, r.retire_time is None) for r in rows
            ]
        with self._lock:
            keys: dict[str, SigningKey] = {}
            current = None
            for kid, algorithm, sealed, _, is_current in loaded:
                keys[kid] = self._keys.get(kid) or signing.unseal(kid, algorithm, sealed, self._kek)
                if is_current and current is None:
                    current = keys[kid]
            self._keys = keys
            self._jwks = [jwk for *_, jwk, _ in loaded]
            self._current = current
            self._loaded_at = time.monotonic()


class TokenCodec:
    """Mints tokens with the current key and verifies them against the published ones."""

    def __init__(self, keyring: Keyring, issuer: str, audiences: tuple[str, ...]) -> None:
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
        expire_time: datetime,
    ) -> tuple[str, TokenClaims]:
        """Sign a token; the caller has already bounded ``expire_time``."""
        key = self._keyring.current()
        now = datetime.now(UTC).replace(microsecond=0)
        claims = TokenClaims(
            subject,
            org_id,
            key_id,
            key_version,
            scopes,
            audience,
            new_id("tok"),
            now,
            expire_time.replace(microsecond=0),
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
        token = jwt.encode(
            payload, key.private_key, algorithm=key.algorithm, headers={"typ": "at+jwt", "kid": key.kid}
        )
        return token, claims

    def verify(self, token: str) -> TokenClaims:
        """Check signature, algorithm, kid, headers, typ, iss, aud, exp and nbf; return the claims."""
        key = self._keyring.find(token_kid(token))
        if key is None:
            raise invalid_token()
        payload = decode_verified(token, key.public_key, key.algorithm, self.issuer, self.audiences)
        return _claims(payload)


def token_kid(token: str) -> str:
    """The ``kid`` of a token whose header is acceptable (only alg, typ at+jwt, kid); else INVALID_TOKEN."""
    if len(token) > MAX_TOKEN_LENGTH or token.count(".") != 2:
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
