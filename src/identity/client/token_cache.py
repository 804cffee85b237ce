"""Exchange an API key for an access token, cache it, and refresh it shortly before expiry.

A token is refreshed once less than a tenth of its lifetime, or less than 60 seconds, is left
(whichever comes first). While a still-valid token is being refreshed, other callers keep using
it; only when no valid token is left do they wait. At most one exchange is in flight at a time.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration

from identity.v1 import token_service_pb2 as pb
from identity.v1 import token_service_pb2_grpc as pb_grpc

log = logging.getLogger("identity.client")

REFRESH_FRACTION = 0.1
MAX_REFRESH_MARGIN_SECONDS = 60.0
EXCHANGE_TIMEOUT_SECONDS = 10.0

Clock = Callable[[], float]


@dataclass(frozen=True)
class CachedToken:
    """An access token with the local (monotonic) times at which to refresh it and stop using it."""

    value: str
    refresh_at: float
    expire_at: float

    @classmethod
    def received(cls, value: str, expires_in: float, now: float) -> CachedToken:
        """A token valid for ``expires_in`` seconds from ``now``."""
        margin = min(expires_in * REFRESH_FRACTION, MAX_REFRESH_MARGIN_SECONDS)
        return cls(value, now + expires_in - margin, now + expires_in)

    def fresh(self, now: float) -> bool:
        """Whether the token needs no refresh yet."""
        return now < self.refresh_at

    def valid(self, now: float) -> bool:
        """Whether the token may still be sent."""
        return now < self.expire_at


@dataclass(frozen=True)
class ExchangeOptions:
    """What to exchange: the key (and its id for the v3 flow), audience, down-scoping, lifetime."""

    api_key: str
    key_id: str = ""
    audience: str = ""
    scopes: Sequence[str] = ()
    lifetime: timedelta | None = None

    def call(self, stub: Any) -> tuple[Any, Any]:
        """The stub method and request of the exchange: v3 with a key id, v2 without."""
        lifetime = Duration()
        if self.lifetime is not None:
            lifetime.FromTimedelta(self.lifetime)
        common: dict[str, Any] = {
            "api_key": self.api_key,
            "audience": self.audience,
            "scopes": list(self.scopes),
            "lifetime": lifetime,
        }
        if self.key_id:
            return stub.ExchangeApiKeyWithId, pb.ExchangeApiKeyWithIdRequest(key_id=self.key_id, **common)
        return stub.ExchangeApiKey, pb.ExchangeApiKeyRequest(**common)


class TokenSource:
    """A thread-safe cache of one access token, exchanged from an API key over ``channel``."""

    def __init__(
        self,
        channel: grpc.Channel,
        api_key: str,
        *,
        key_id: str = "",
        audience: str = "",
        scopes: Sequence[str] = (),
        lifetime: timedelta | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        """Exchange ``api_key`` at the identity service behind ``channel`` (v3 when ``key_id`` is given)."""
        self._stub = pb_grpc.TokenServiceStub(channel)
        self._options = ExchangeOptions(api_key, key_id, audience, tuple(scopes), lifetime)
        self._clock = clock
        self._lock = threading.Lock()
        self._token: CachedToken | None = None

    def token(self) -> str:
        """A valid access token, exchanging or refreshing it when needed."""
        now = self._clock()
        token = self._token
        if token is not None and token.fresh(now):
            return token.value
        if token is not None and token.valid(now):
            if not self._lock.acquire(blocking=False):
                return token.value  # another thread is refreshing; the current token still works
        else:
            self._lock.acquire()
        try:
            return self._refresh_locked().value
        finally:
            self._lock.release()

    def _refresh_locked(self) -> CachedToken:
        token = self._token
        now = self._clock()
        if token is not None and token.fresh(now):
            return token  # refreshed by the thread that held the lock before us
        method, request = self._options.call(self._stub)
        try:
            reply = method(request, timeout=EXCHANGE_TIMEOUT_SECONDS)
        except grpc.RpcError:
            if token is not None and token.valid(self._clock()):
                log.warning("token refresh failed; using the current token until it expires", exc_info=True)
                return token
            raise
        self._token = CachedToken.received(reply.access_token, reply.expires_in, now)
        return self._token


class AsyncTokenSource:
    """An asyncio-safe cache of one access token, exchanged over a ``grpc.aio`` channel."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        api_key: str,
        *,
        key_id: str = "",
        audience: str = "",
        scopes: Sequence[str] = (),
        lifetime: timedelta | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        """Exchange ``api_key`` at the identity service behind ``channel`` (v3 when ``key_id`` is given)."""
        self._stub = pb_grpc.TokenServiceStub(channel)
        self._options = ExchangeOptions(api_key, key_id, audience, tuple(scopes), lifetime)
        self._clock = clock
        self._lock = asyncio.Lock()
        self._token: CachedToken | None = None

    async def token(self) -> str:
        """A valid access token, exchanging or refreshing it when needed."""
        now = self._clock()
        token = self._token
        if token is not None and token.fresh(now):
            return token.value
        if token is not None and token.valid(now) and self._lock.locked():
            return token.value  # another task is refreshing; the current token still works
        async with self._lock:
            token = self._token
            now = self._clock()
            if token is not None and token.fresh(now):
                return token.value
            method, request = self._options.call(self._stub)
            try:
                reply = await method(request, timeout=EXCHANGE_TIMEOUT_SECONDS)
            except grpc.RpcError:
                if token is not None and token.valid(self._clock()):
                    log.warning(
                        "token refresh failed; using the current token until it expires", exc_info=True
                    )
                    return token.value
                raise
            self._token = CachedToken.received(reply.access_token, reply.expires_in, now)
            return self._token.value
