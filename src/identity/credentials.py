"""Where the facts behind a credential come from: the key-state cache, else the database."""

from __future__ import annotations

import time

from identity.cache.states import KeyStateCache, LiveKey
from identity.store.database import Database
from identity.store.lookups import change_log_head, credential_by_lookup
from identity.store.repository import Repository
from identity.store.rows import KeySecrets
from identity.store.tokens import TokenRepository


class CredentialStore:
    """Reads keys, organizations, principals and token revocations, through the cache."""

    def __init__(self, db: Database, cache: KeyStateCache) -> None:
        """Read from ``cache`` while it is fresh, else from ``db`` (filling the cache)."""
        self._db = db
        self._cache = cache

    def live_key(self, key_id: str, principal_id: str = "") -> LiveKey | None:
        """A key as it stands, with its organization and a principal (the key's own by default)."""
        began = time.monotonic()  # before the lookup: a catch-up may renew the cache right after it misses
        cached = self._cache.get(key_id, principal_id)
        if cached is not None:
            return cached
        generation = self._cache.generation
        with self._db.read() as session:
            repo = Repository(session)
            found = repo.key_with_secrets(key_id)
            if found is not None:
                org = repo.get_organization(found[0].org_id)
                principal = repo.get_principal(principal_id or found[0].principal_id)
        self._read_ended(began)
        if found is None:
            self._cache.put_absent(generation, key_id)
            return None
        if org is None or principal is None:
            return None
        key, secrets = found
        live = LiveKey(key, secrets.version, org, principal)
        self._cache.put(generation, live)
        return live

    def by_lookup(self, lookup: str) -> tuple[LiveKey, KeySecrets] | None:
        """The key with this lookup handle and the hashes a presented secret may match (one read)."""
        generation = self._cache.generation
        began = time.monotonic()
        with self._db.read_once() as connection:
            found = credential_by_lookup(connection, lookup)
        self._read_ended(began)
        if found is None:
            self._cache.put_absent(generation, lookup=lookup)
            return None
        key, secrets, org, principal = found
        live = LiveKey(key, secrets.version, org, principal)
        self._cache.put(generation, live, lookup)
        return live, secrets

    def token_revoked(self, jti: str) -> bool:
        """Whether the token with this id was revoked."""
        began = time.monotonic()  # before the lookup, as in live_key
        cached = self._cache.token_revoked(jti)
        if cached is not None:
            return cached
        with self._db.read() as session:
            revoked = TokenRepository(session).is_revoked(jti)
        self._read_ended(began)
        return revoked

    def _read_ended(self, began: float) -> None:
        # A read the cache may be behind: how far the log was after it (see KeyStateCache).
        if self._cache.read_may_be_ahead(began):
            with self._db.read_once() as connection:
                head = change_log_head(connection)
            self._cache.note_read_ahead(head)

    def password_hash(self, principal_id: str) -> str | None:
        """A service account's password hash, or None (never cached)."""
        with self._db.read() as session:
            return Repository(session).password_hash(principal_id)
