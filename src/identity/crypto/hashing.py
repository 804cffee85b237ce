"""argon2id hashing of key secrets and service-account passwords."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError


@dataclass(frozen=True)
class Argon2Profile:
    """argon2id cost parameters; the default is the OWASP minimum (19 MiB, t=2, p=1)."""

    memory_kib: int = 19 * 1024
    time_cost: int = 2
    parallelism: int = 1


class Hasher(Protocol):
    """What the use cases need of argon2id: hash a new secret, verify a presented one."""

    def hash(self, secret: str) -> str:
        """Return the PHC-encoded hash of ``secret``."""
        ...

    def verify(self, encoded: str | None, secret: str) -> bool:
        """Whether ``secret`` matches ``encoded``; with None, spend the same time and say no."""
        ...


class SecretHasher:
    """Hashes and verifies secrets with argon2id; the comparison inside is constant-time."""

    def __init__(self, profile: Argon2Profile) -> None:
        """Build a hasher with the given cost profile."""
        self._hasher = PasswordHasher(
            time_cost=profile.time_cost, memory_cost=profile.memory_kib, parallelism=profile.parallelism
        )
        # Verified against when no real hash exists, so unknown keys cost what wrong secrets do.
        self._decoy = self._hasher.hash("decoy")

    def hash(self, secret: str) -> str:
        """Return the PHC-encoded argon2id hash of ``secret``."""
        return str(self._hasher.hash(secret))

    def verify(self, encoded: str | None, secret: str) -> bool:
        """Whether ``secret`` matches ``encoded``; with None, spend the same time and say no."""
        try:
            return bool(self._hasher.verify(encoded or self._decoy, secret)) and bool(encoded)
        except (VerificationError, InvalidHashError):
            return False
