"""Failed-attempt throttling: per lookup handle and per peer, in token buckets.

Each failed attempt takes a token from the bucket of its key (a lookup handle, a peer address);
buckets refill at a steady rate up to their burst size. Once a bucket is empty, attempts under
that key are refused with RATE_LIMITED before any database or argon2 work, so a flood of wrong
secrets costs almost nothing. Only the cold path consults it: a credential this process already
verified never reaches it, so warm callers are never slowed by someone else's flood.
"""

from __future__ import annotations

import threading
import time

from identity.cache.bounded import BoundedCache
from identity.domain.errors import IdentityError, Reason
from identity.domain.model import Origin

MAX_TRACKED = 100_000


def rate_limited() -> IdentityError:
    """The answer to a throttled attempt."""
    return IdentityError(Reason.RATE_LIMITED, "too many failed attempts; retry later")


class FailureBuckets:
    """Token buckets of failed attempts, one per key, at most ``MAX_TRACKED`` keys remembered.

    A key may fail ``per_minute`` times at once, and the allowance returns at that rate.
    """

    def __init__(self, per_minute: int, max_tracked: int = MAX_TRACKED) -> None:
        """Allow each key ``per_minute`` failures a minute."""
        self._burst = float(per_minute)
        self._refill = per_minute / 60.0
        self._lock = threading.Lock()
        self._buckets: BoundedCache[str, tuple[float, float]] = BoundedCache(max_tracked)

    def empty(self, key: str) -> bool:
        """Whether ``key`` has no failure left to spend."""
        with self._lock:
            return self._tokens(key, time.monotonic()) < 1

    def spend(self, key: str) -> None:
        """Record one failure of ``key``."""
        now = time.monotonic()
        with self._lock:
            self._buckets.put(key, (self._tokens(key, now) - 1, now))

    def _tokens(self, key: str, now: float) -> float:
        held = self._buckets.get(key)
        if held is None:
            return self._burst
        tokens, since = held
        return min(self._burst, tokens + (now - since) * self._refill)


class AttemptThrottle:
    """Refuses attempts from a lookup handle or a peer that failed too often."""

    def __init__(self, per_handle: int, per_peer: int) -> None:
        """Allow a lookup handle ``per_handle`` and a peer ``per_peer`` failed attempts a minute."""
        self._handles = FailureBuckets(per_handle)
        self._peers = FailureBuckets(per_peer)

    def check(self, handle: str, origin: Origin) -> None:
        """Raise RATE_LIMITED when the handle or the client address has no failure left.

        The handle is judged first: a flood against one key never makes gRPC look up its peer.
        """
        if self._handles.empty(handle):
            raise rate_limited()
        peer = origin.client_ip
        if peer and self._peers.empty(peer):
            raise rate_limited()

    def failed(self, handle: str, peer: str) -> None:
        """Record a failed attempt against the handle and the peer."""
        self._handles.spend(handle)
        if peer:
            self._peers.spend(peer)
