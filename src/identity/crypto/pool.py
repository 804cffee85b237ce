"""argon2id work under a bound: a few hashes at once, a short queue, and a refusal beyond it.

An argon2id verification costs tens of milliseconds of one core, so unbounded it lets a flood
of cold credentials take every core and every request thread. Here at most ``threads`` run at
once and ``queue`` more wait; any further request is refused at once with RATE_LIMITED rather
than queued without end. The work runs on the caller's thread (argon2-cffi releases the GIL).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from identity.crypto.hashing import SecretHasher
from identity.domain.errors import IdentityError, Reason


def pool_full() -> IdentityError:
    """The answer when the argon2 pool cannot take more work."""
    return IdentityError(Reason.RATE_LIMITED, "too many key verifications in progress; retry shortly")


class BoundedHasher:
    """A :class:`SecretHasher` whose work is admitted by a bounded pool."""

    def __init__(self, hasher: SecretHasher, threads: int, queue: int) -> None:
        """Run at most ``threads`` hashes at once with ``queue`` more waiting."""
        self._hasher = hasher
        self._admitted = threading.BoundedSemaphore(threads + queue)
        self._running = threading.BoundedSemaphore(threads)

    def hash(self, secret: str) -> str:
        """The argon2id hash of ``secret``; RATE_LIMITED when the pool is full."""
        with self._slot():
            return self._hasher.hash(secret)

    def verify(self, encoded: str | None, secret: str) -> bool:
        """Whether ``secret`` matches ``encoded``; RATE_LIMITED when the pool is full."""
        with self._slot():
            return self._hasher.verify(encoded, secret)

    @contextmanager
    def _slot(self) -> Iterator[None]:
        if not self._admitted.acquire(blocking=False):
            raise pool_full()
        try:
            with self._running:
                yield
        finally:
            self._admitted.release()
