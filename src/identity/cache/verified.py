"""What this process has already verified: API key secrets and signed tokens.

A presented credential is remembered only by its fingerprint, a keyed BLAKE2b MAC under a
random pepper that lives in this process's memory alone, so the cache never holds a usable
secret. (BLAKE2b rather than HMAC-SHA256: the same keyed-hash role, several times cheaper on the
hot path, and unlike ``hmac.digest`` it keeps the GIL, which busy request threads would make
costly to win back.)
A verified secret maps to its key and secret version; whether that version still works is
judged each time against the key-state cache, so rotation and revocation need no purge here.
A verified token maps to its claims until it expires (plus the verification leeway): its
signature cannot change, only the state of its key, which is again judged each time.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from datetime import UTC, datetime

from identity.cache.bounded import BoundedCache
from identity.cache.lookups import Lookups
from identity.tokens import LEEWAY_SECONDS, TokenClaims

SECRET_SECONDS = 900.0


class VerifiedCredentials:
    """Fingerprints of verified secrets and tokens, bounded in number and time."""

    def __init__(self, max_entries: int, secret_seconds: float = SECRET_SECONDS) -> None:
        """Remember up to ``max_entries`` secrets and as many tokens; secrets for ``secret_seconds``."""
        # Keyed once: each fingerprint copies this state instead of hashing the key block again.
        self._keyed = hashlib.blake2b(key=secrets.token_bytes(32), digest_size=32)
        self._lock = threading.Lock()
        self._secret_seconds = secret_seconds
        self._secrets: BoundedCache[bytes, tuple[str, int]] = BoundedCache(max_entries)
        self._tokens: BoundedCache[bytes, TokenClaims] = BoundedCache(max_entries)
        self.secret_lookups = Lookups()
        self.token_lookups = Lookups()

    def fingerprint(self, credential: str | bytes) -> bytes:
        """The keyed BLAKE2b MAC of ``credential`` (or of bytes that hold one) under this process's pepper."""
        mac = self._keyed.copy()
        mac.update(credential.encode() if isinstance(credential, str) else credential)
        return mac.digest()

    def secret(self, fingerprint: bytes) -> tuple[str, int] | None:
        """The key id and secret version a verified secret belongs to, or None."""
        with self._lock:
            known = self._secrets.get(fingerprint)
            self.secret_lookups.count(known is not None)
        return known

    def remember_secret(self, fingerprint: bytes, key_id: str, version: int) -> None:
        """Remember that this secret verified as ``version`` of key ``key_id``."""
        with self._lock:
            self._secrets.put(fingerprint, (key_id, version), time.monotonic() + self._secret_seconds)

    def forget_secret(self, fingerprint: bytes) -> None:
        """Forget a secret that no longer works."""
        with self._lock:
            self._secrets.pop(fingerprint)

    def token(self, fingerprint: bytes) -> TokenClaims | None:
        """The claims of a token whose signature verified, while it is not past its expiry."""
        with self._lock:
            claims = self._tokens.get(fingerprint)
            self.token_lookups.count(claims is not None)
        return claims

    def remember_token(self, fingerprint: bytes, claims: TokenClaims) -> None:
        """Remember a verified token until it expires (after that, verifying again says EXPIRED_TOKEN)."""
        remaining = (claims.expire_time - datetime.now(UTC)).total_seconds() + LEEWAY_SECONDS
        with self._lock:
            self._tokens.put(fingerprint, claims, time.monotonic() + remaining)
