"""Who is calling: resolves a presented credential to a :class:`Caller`, or says why not.

One resolver serves every door that reads a caller credential (the admin interceptor today;
Check and Envoy's ext_authz judge with the same rules). API keys are verified against their
argon2id hash; JWT callers slot in beside them in :meth:`Authenticator.authenticate`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from identity.crypto import apikeys
from identity.crypto.hashing import SecretHasher
from identity.domain.decisions import CredentialFacts, credential_denial, permission_denial
from identity.domain.errors import IdentityError, Reason
from identity.domain.model import Caller
from identity.store.database import Database
from identity.store.repository import KeySecrets, Repository

INVALID_KEY_MESSAGE = "the API key is invalid"


def invalid_api_key() -> IdentityError:
    """The one answer for malformed, unknown and wrong-secret keys alike."""
    return IdentityError(Reason.INVALID_API_KEY, INVALID_KEY_MESSAGE)


class Authenticator:
    """Verifies credentials against the database."""

    def __init__(self, db: Database, hasher: SecretHasher) -> None:
        """Use ``db`` for key lookups and ``hasher`` for secret checks."""
        self._db = db
        self._hasher = hasher

    def authenticate(self, credential: str | None, client_ip: str | None) -> Caller:
        """Resolve a credential to its caller, or raise with the API.md reason."""
        if not credential:
            raise IdentityError(
                Reason.MISSING_AUTHORIZATION,
                "no credential: send 'authorization: Bearer <key>' or 'x-api-key'",
            )
        facts = self.verify_api_key(credential)
        denial = credential_denial(facts, datetime.now(UTC), client_ip)
        if denial is not None:
            raise denial
        key = facts.key
        return Caller(
            principal_id=key.principal_id,
            org_id=key.org_id,
            key_id=key.id,
            scopes=key.scopes,
            resources=key.resources,
            platform=facts.organization.is_platform and "*" in key.scopes,
            credential_expire_time=key.expire_time,
        )

    def verify_api_key(self, plaintext: str) -> CredentialFacts:
        """Find and verify a plaintext key; INVALID_API_KEY without saying what was wrong."""
        parsed = apikeys.parse(plaintext)
        if parsed is None:
            raise invalid_api_key()
        with self._db.read() as session:
            repo = Repository(session)
            found = repo.key_by_lookup(parsed.lookup)
            org = repo.get_organization(found[0].org_id) if found else None
            principal = repo.get_principal(found[0].principal_id) if found else None
        # The hash work runs for unknown keys too, so timing does not tell them apart.
        secrets = found[1] if found else None
        verified = self._matches(secrets, parsed.secret)
        if not verified or found is None or org is None or principal is None:
            raise invalid_api_key()
        key = found[0]
        if key.prefix != parsed.prefix:
            raise invalid_api_key()
        return CredentialFacts(key, org, principal)

    def _matches(self, secrets: KeySecrets | None, secret: str) -> bool:
        if secrets is None:
            return self._hasher.verify(None, secret)
        if self._hasher.verify(secrets.secret_hash, secret):
            return True
        grace_until = secrets.previous_secret_expire_time
        return (
            secrets.previous_secret_hash is not None
            and grace_until is not None
            and grace_until > datetime.now(UTC)
            and self._hasher.verify(secrets.previous_secret_hash, secret)
        )


def require_scope(caller: Caller, scope: str) -> None:
    """Raise INSUFFICIENT_SCOPE unless the caller's scopes grant ``scope``."""
    denial = permission_denial(caller.scopes, caller.resources, [scope], None)
    if denial is not None:
        raise denial
