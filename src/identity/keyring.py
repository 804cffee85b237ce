"""The server's token signing keys: created, sealed into the database, unsealed once per process."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from identity.crypto import signing
from identity.crypto.signing import SigningKey
from identity.domain.errors import IdentityError, invalid
from identity.ids import new_id
from identity.store.database import Database
from identity.store.tokens import TokenRepository
from identity.tokens import LEEWAY_SECONDS, MAX_LIFETIME

log = logging.getLogger(__name__)

# How stale the keyring may get: another replica's rotation is seen within about this.
KEYRING_REFRESH_SECONDS = 10.0
# An unknown kid triggers a reload at most this often, so absurd kids cannot flood the database.
UNKNOWN_KID_RELOAD_SECONDS = 1.0


class Keyring:
    """The signing keys of the service, unsealed once per process and refreshed lazily.

    Every exchange asks for the current key, most of them on the event loop, where nothing may
    wait for the database. So once a key is known, a stale keyring is refreshed on a thread of its
    own while calls go on signing with the key they have: it stays published for as long as its
    tokens live, whatever another replica made current meanwhile.
    """

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
        self._refreshing = False

    def current(self) -> SigningKey:
        """The key new tokens are signed with; created on first use if the database has none."""
        current = self._current
        if current is None:
            self._reload()
            current = self._current or self.rotate(self._algorithm)
        elif time.monotonic() - self._loaded_at > KEYRING_REFRESH_SECONDS:
            self._refresh_in_background()
        return current

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
            raise invalid("algorithm", f"must be one of {', '.join(signing.ALGORITHMS)}")
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

    def _refresh_in_background(self) -> None:
        with self._lock:
            if self._refreshing:
                return
            self._refreshing = True
        threading.Thread(target=self._refresh, name="keyring-refresh", daemon=True).start()

    def _refresh(self) -> None:
        try:
            self._reload()
        except IdentityError:
            # The database is down: keep signing with the key in hand; the next call tries again.
            log.warning("could not refresh the signing keys: the database is unavailable")
        finally:
            with self._lock:
                self._refreshing = False

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
