"""Who is calling: resolves a presented credential to a :class:`Caller`, or says why not.

One resolver serves every door that reads a credential: the admin interceptor, token exchange,
introspection and (with the checks issue) Check and Envoy's ext_authz. API keys are verified
against their argon2id hash; JWTs against the published signing keys and the live state of the
key that minted them, so revoking a key stops its tokens at once.
"""

from __future__ import annotations

from datetime import UTC, datetime

from identity.crypto import apikeys
from identity.crypto.hashing import SecretHasher
from identity.domain.decisions import CredentialFacts, credential_denial, permission_denial
from identity.domain.errors import IdentityError, Reason
from identity.domain.model import Caller, KeyState
from identity.store.database import Database
from identity.store.repository import KeySecrets, Repository
from identity.store.tokens import TokenRepository
from identity.tokens import TokenClaims, TokenCodec, invalid_token, looks_like_jwt

INVALID_KEY_MESSAGE = "the API key is invalid"


def invalid_api_key() -> IdentityError:
    """The one answer for malformed, unknown and wrong-secret keys alike."""
    return IdentityError(Reason.INVALID_API_KEY, INVALID_KEY_MESSAGE)


class Authenticator:
    """Verifies API keys and tokens against the database."""

    def __init__(self, db: Database, hasher: SecretHasher, codec: TokenCodec) -> None:
        """Use ``db`` for lookups, ``hasher`` for secrets, ``codec`` for tokens."""
        self._db = db
        self._hasher = hasher
        self.codec = codec

    def authenticate(self, credential: str | None, client_ip: str | None) -> Caller:
        """Resolve a caller credential (API key or JWT) to its caller, or raise with the API.md reason."""
        if not credential:
            raise IdentityError(
                Reason.MISSING_AUTHORIZATION,
                "no credential: send 'authorization: Bearer <key>' or 'x-api-key'",
            )
        expire_time: datetime | None
        if looks_like_jwt(credential):
            claims = self.codec.verify(credential)
            facts = self.token_facts(claims)
            scopes, expire_time, kind = claims.scopes, claims.expire_time, "jwt"
        else:
            facts = self.verify_api_key(credential)
            scopes, expire_time, kind = facts.key.scopes, facts.key.expire_time, "api_key"
        denial = credential_denial(facts, datetime.now(UTC), client_ip)
        if denial is not None:
            raise denial
        return Caller(
            principal_id=facts.principal.id,
            org_id=facts.key.org_id,
            key_id=facts.key.id,
            scopes=scopes,
            resources=facts.key.resources,
            platform=facts.organization.is_platform and "*" in scopes,
            credential_type=kind,
            credential_expire_time=expire_time,
        )

    def verify_api_key(self, plaintext: str) -> CredentialFacts:
        """Find and verify a plaintext key; INVALID_API_KEY without saying what was wrong."""
        parsed = apikeys.parse(plaintext)
        if parsed is None:
            raise invalid_api_key()
        with self._db.read() as session:
            found = Repository(session).credential_by_lookup(parsed.lookup)
        # The hash work runs for unknown keys too, so timing does not tell them apart.
        version = self._matching_version(found[1] if found else None, parsed.secret)
        if version is None or found is None:
            raise invalid_api_key()
        key, _, org, principal = found
        if key.prefix != parsed.prefix:
            raise invalid_api_key()
        return CredentialFacts(key, org, principal, version)

    def verify_password(self, principal_id: str, password: str) -> bool:
        """Whether ``password`` is the password of service account ``principal_id`` (constant work)."""
        with self._db.read() as session:
            stored = Repository(session).password_hash(principal_id)
        return self._hasher.verify(stored, password)

    def token_facts(self, claims: TokenClaims) -> CredentialFacts:
        """The live state behind a verified token; INVALID_TOKEN when it was revoked or outlived its key."""
        now = datetime.now(UTC)
        with self._db.read() as session:
            repo = Repository(session)
            revoked = TokenRepository(session).is_revoked(claims.jti)
            found = repo.key_with_secrets(claims.key_id)
            org = repo.get_organization(claims.org_id)
            principal = repo.get_principal(claims.subject)
        if revoked or found is None or org is None or principal is None:
            raise invalid_token()
        key, secrets = found
        if key.state(now) is not KeyState.ACTIVE or key.org_id != org.id or principal.org_id != org.id:
            raise invalid_token()
        if not _version_current(claims.key_version, secrets, now):
            raise invalid_token("the token's key was rotated since it was minted")
        return CredentialFacts(key, org, principal, claims.key_version)

    def _matching_version(self, secrets: KeySecrets | None, secret: str) -> int | None:
        if secrets is None:
            self._hasher.verify(None, secret)
            return None
        if self._hasher.verify(secrets.secret_hash, secret):
            return secrets.version
        grace_until = secrets.previous_secret_expire_time
        if (
            secrets.previous_secret_hash is not None
            and grace_until is not None
            and grace_until > datetime.now(UTC)
            and self._hasher.verify(secrets.previous_secret_hash, secret)
        ):
            return secrets.version - 1
        return None


def _version_current(version: int, secrets: KeySecrets, now: datetime) -> bool:
    """A token minted by the previous secret lives only as long as that secret's grace."""
    if version == secrets.version:
        return True
    grace_until = secrets.previous_secret_expire_time
    return version == secrets.version - 1 and grace_until is not None and grace_until > now


def require_scope(caller: Caller, scope: str) -> None:
    """Raise INSUFFICIENT_SCOPE unless the caller's scopes grant ``scope``."""
    denial = permission_denial(caller.scopes, caller.resources, [scope], None)
    if denial is not None:
        raise denial
