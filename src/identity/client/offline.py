"""Mode (a): judge a credential offline, from a cached JWK Set fetched with ``GetJwks``.

The JWK Set is fetched on first use and again when a token names an unknown ``kid``, at most
once per ``refetch_seconds``. Offline verification cannot see revocations before a token
expires; use :mod:`identity.client.checking` where a revoked key must stop at once.
"""

from __future__ import annotations

import asyncio
import threading
import time

import grpc
import jwt

from identity.client import jwks
from identity.client.identity import Identity
from identity.domain.decisions import permission_denial
from identity.domain.errors import IdentityError, Reason
from identity.tokens import invalid_token, looks_like_jwt, token_kid
from identity.v1 import token_service_pb2 as pb
from identity.v1 import token_service_pb2_grpc as pb_grpc

REFETCH_SECONDS = 10.0
FETCH_TIMEOUT_SECONDS = 5.0


def _unreachable(error: grpc.RpcError) -> IdentityError:
    return IdentityError(
        Reason.UNAVAILABLE, f"cannot fetch the JWK Set from the identity service: {error.code().name}"
    )


def _judge(identity: Identity, permission: str) -> Identity:
    denial = permission_denial(identity.scopes, (), [permission], None)
    if denial is not None:
        raise denial
    return identity


def _kid(credential: str) -> str:
    if not looks_like_jwt(credential):
        raise invalid_token("offline verification accepts only access tokens, not API keys")
    return token_kid(credential)


class _KeyCache:
    """The fetched keys, and when the JWK Set may be fetched again (shared by both flavours)."""

    def __init__(self, refetch_seconds: float) -> None:
        self.interval = refetch_seconds
        self.keys: dict[str, jwt.PyJWK] = {}
        self.fetched_at: float | None = None
        self.failure: IdentityError | None = None

    def due(self, kid: str) -> bool:
        """Whether ``kid`` is unknown and the rate limit allows a fetch; marks the fetch as started."""
        now = time.monotonic()
        if kid in self.keys or (self.fetched_at is not None and now - self.fetched_at < self.interval):
            return False
        self.fetched_at = now
        return True

    def store(self, jwks_json: str) -> None:
        self.keys = jwks.parse_jwks(jwks_json)
        self.failure = None

    def fail(self, error: grpc.RpcError) -> None:
        self.failure = IdentityError(
            Reason.UNAVAILABLE, f"cannot fetch the JWK Set from the identity service: {error.code().name}"
        )

    def lookup(self, kid: str) -> jwt.PyJWK | None:
        """The key named ``kid``; UNAVAILABLE when it is unknown because the last fetch failed."""
        key = self.keys.get(kid)
        if key is None and self.failure is not None:
            raise self.failure
        return key


class OfflineAuthorizer:
    """Verifies access tokens locally against the identity service's JWK Set (thread-safe)."""

    def __init__(
        self,
        channel: grpc.Channel,
        *,
        issuer: str = jwks.DEFAULT_ISSUER,
        audience: str = jwks.DEFAULT_AUDIENCE,
        refetch_seconds: float = REFETCH_SECONDS,
    ) -> None:
        """Fetch keys over ``channel``; accept tokens of ``issuer`` minted for ``audience``."""
        self._stub = pb_grpc.TokenServiceStub(channel)
        self._issuer = issuer
        self._audience = audience
        self._cache = _KeyCache(refetch_seconds)
        self._lock = threading.Lock()

    def authorize(self, credential: str, permission: str, client_ip: str) -> Identity:
        """The identity of ``credential`` if it is a valid token granting ``permission``."""
        kid = _kid(credential)
        return _judge(jwks.verify(credential, self._key(kid), self._issuer, self._audience), permission)

    def _key(self, kid: str) -> jwt.PyJWK | None:
        if kid not in self._cache.keys:
            with self._lock:
                if self._cache.due(kid):
                    try:
                        reply = self._stub.GetJwks(pb.GetJwksRequest(), timeout=FETCH_TIMEOUT_SECONDS)
                        self._cache.store(reply.jwks_json)
                    except grpc.RpcError as error:
                        self._cache.fail(error)
        return self._cache.lookup(kid)


class AioOfflineAuthorizer:
    """Verifies access tokens locally against the JWK Set fetched over a ``grpc.aio`` channel."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        issuer: str = jwks.DEFAULT_ISSUER,
        audience: str = jwks.DEFAULT_AUDIENCE,
        refetch_seconds: float = REFETCH_SECONDS,
    ) -> None:
        """Fetch keys over ``channel``; accept tokens of ``issuer`` minted for ``audience``."""
        self._stub = pb_grpc.TokenServiceStub(channel)
        self._issuer = issuer
        self._audience = audience
        self._cache = _KeyCache(refetch_seconds)
        self._lock = asyncio.Lock()

    async def authorize(self, credential: str, permission: str, client_ip: str) -> Identity:
        """The identity of ``credential`` if it is a valid token granting ``permission``."""
        kid = _kid(credential)
        key = await self._key(kid)
        return _judge(jwks.verify(credential, key, self._issuer, self._audience), permission)

    async def _key(self, kid: str) -> jwt.PyJWK | None:
        if kid not in self._cache.keys:
            async with self._lock:
                if self._cache.due(kid):
                    try:
                        reply = await self._stub.GetJwks(pb.GetJwksRequest(), timeout=FETCH_TIMEOUT_SECONDS)
                        self._cache.store(reply.jwks_json)
                    except grpc.RpcError as error:
                        self._cache.fail(error)
        return self._cache.lookup(kid)
