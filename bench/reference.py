"""Reference figures measured in the benchmark process itself."""

from __future__ import annotations

import os
import time

from identity.crypto.hashing import Argon2Profile, SecretHasher


def usable_cores() -> int:
    """CPUs this process may run on."""
    return len(os.sched_getaffinity(0))


def argon2_verifies_per_second(seconds: float = 1.0) -> float:
    """argon2id verifications per second on one core, with the production profile."""
    hasher = SecretHasher(Argon2Profile())
    encoded = hasher.hash("a secret")
    count = 0
    started = time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        hasher.verify(encoded, "a secret")
        count += 1
    return count / elapsed
