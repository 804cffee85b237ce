"""argon2id work under a bound: a few hashes at once, a short queue, and a refusal beyond it.

An argon2id verification costs tens of milliseconds of one core, so unbounded it lets a flood
of cold credentials take every core and every request thread. Here at most ``threads`` run at
once, on threads of their own, and ``queue`` more wait; any further request is refused at once
with RATE_LIMITED rather than queued without end. Dedicated threads also keep argon2's large
buffers in a few malloc arenas instead of one per request thread, which bounds memory.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from identity.blocking import may_block
from identity.crypto.hashing import SecretHasher
from identity.domain.errors import IdentityError, Reason

T = TypeVar("T")


def pool_full() -> IdentityError:
    """The answer when the argon2 pool cannot take more work."""
    return IdentityError(Reason.RATE_LIMITED, "too many key verifications in progress; retry shortly")


class BoundedHasher:
    """A :class:`SecretHasher` whose work is admitted by a bounded pool."""

    def __init__(self, hasher: SecretHasher, threads: int, queue: int) -> None:
        """Run at most ``threads`` hashes at once with ``queue`` more waiting."""
        self._hasher = hasher
        self.threads = threads
        self.capacity = threads + queue
        self._admitting = threading.Lock()
        self._admitted = 0
        self._refused = 0
        self._done = 0
        self._cpu_seconds = 0.0
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="argon2")

    @property
    def in_use(self) -> int:
        """Hashes admitted now: running, or waiting for a thread."""
        return self._admitted

    @property
    def refused(self) -> int:
        """Hashes refused so far because the pool was full."""
        return self._refused

    @property
    def done(self) -> int:
        """Hashes and verifications completed so far."""
        return self._done

    @property
    def cpu_seconds(self) -> float:
        """CPU time the pool's threads spent on them so far: what argon2id cost this process."""
        return self._cpu_seconds

    def hash(self, secret: str) -> str:
        """The argon2id hash of ``secret``; RATE_LIMITED when the pool is full."""
        return self._run(self._hasher.hash, secret)

    def verify(self, encoded: str | None, secret: str) -> bool:
        """Whether ``secret`` matches ``encoded``; RATE_LIMITED when the pool is full."""
        return self._run(self._hasher.verify, encoded, secret)

    def shutdown(self) -> None:
        """Stop the pool's threads once the work admitted so far is done."""
        self._executor.shutdown(wait=False)

    def _run(self, work: Callable[..., T], *args: object) -> T:
        may_block()  # before admission: the event loop's thread hands the call to a request thread
        with self._admitting:
            if self._admitted >= self.capacity:
                self._refused += 1
                raise pool_full()
            self._admitted += 1
        try:
            return self._executor.submit(self._timed, work, *args).result()
        finally:
            with self._admitting:
                self._admitted -= 1

    def _timed(self, work: Callable[..., T], *args: object) -> T:
        started = time.thread_time()
        try:
            return work(*args)
        finally:
            spent = time.thread_time() - started
            with self._admitting:
                self._done += 1
                self._cpu_seconds += spent
