"""Who is calling: resolves a presented credential to a :class:`Caller`, or says why not.

One resolver serves every door that reads a credential: the admin interceptor, token exchange,
introspection, Check and Envoy's ext_authz. A warm credential touches neither argon2 nor the
database: a secret this process verified before is known by its fingerprint, a token by its
verified claims, and the live state of the key behind either comes from the key-state cache,
so revoking a key stops it, and its tokens, on every replica within the cache's bound. A cold
secret is throttled per lookup handle and peer, then verified against its argon2id hash in a
bounded pool.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from identity.cache.verified import VerifiedCredentials
from identity.credentials import CredentialStore
from identity.crypto import apikeys
from identity.crypto.hashing import Hasher
from identity.domain.decisions import CredentialFacts, credential_denial, permission_denial
from identity.domain.errors import IdentityError, Reason
from identity.domain.model import Caller, KeyState, Origin
from identity.store.rows import KeySecrets
from identity.throttle import AttemptThrottle
from identity.tokens import LEEWAY_SECONDS, TokenClaims, TokenCodec, invalid_token, looks_like_jwt

INVALID_KEY_MESSAGE = "the API key is invalid"


def invalid_api_key() -> IdentityError:
    """The one answer for malformed, unknown and wrong-secret keys alike."""
    return IdentityError(Reason.INVALID_API_KEY, INVALID_KEY_MESSAGE)


def version_current(version: int, current: int, grace_until: datetime | None, now: datetime) -> bool:
    """Whether secret ``version`` of a key still works: the current one, or the previous in its grace."""
    if version == current:
        return True
    return version == current - 1 and grace_until is not None and grace_until > now


class Authenticator:
    """Verifies API keys and tokens: caches first, then the database and argon2id."""

    def __init__(
        self,
        store: CredentialStore,
        hasher: Hasher,
        codec: TokenCodec,
        verified: VerifiedCredentials,
        throttle: AttemptThrottle,
    ) -> None:
        """Read state from ``store``, hash with ``hasher``, sign with ``codec``; remember in ``verified``."""
        self._store = store
        self._hasher = hasher
        self.codec = codec
        self._verified = verified
        self._throttle = throttle

    def authenticate(self, credential: str | None, client_ip: str | None, origin: Origin) -> Caller:
        """Resolve a caller credential (API key or JWT) to its caller, or raise with the API.md reason.

        ``client_ip`` is judged against the key's allowlist; failed attempts count against
        ``origin.client_ip``, which is read only then.
        """
        if not credential:
            raise IdentityError(
                Reason.MISSING_AUTHORIZATION,
                "no credential: send 'authorization: Bearer <key>' or 'x-api-key'",
            )
        expire_time: datetime | None
        now = datetime.now(UTC)
        if looks_like_jwt(credential):
            claims, facts = self.verify_token(credential)
            scopes, expire_time, kind = claims.scopes, claims.expire_time, "jwt"
            accepted_until: datetime | None = claims.expire_time + timedelta(seconds=LEEWAY_SECONDS)
        else:
            facts = self.verify_api_key(credential, origin)
            scopes, expire_time, kind = facts.key.scopes, facts.key.expire_time, "api_key"
            accepted_until = None
        denial = credential_denial(facts, now, client_ip)
        if denial is not None:
            raise denial
        grace_until = facts.key.previous_secret_expire_time
        return Caller(
            principal_id=facts.principal.id,
            org_id=facts.key.org_id,
            key_id=facts.key.id,
            scopes=scopes,
            resources=facts.key.resources,
            platform=facts.organization.is_platform and "*" in scopes,
            credential_type=kind,
            credential_expire_time=expire_time,
            # The previous secret's grace may be what admits it: end there too, to be safe.
            valid_until=_earliest(
                facts.key.expire_time,
                accepted_until,
                grace_until if grace_until and grace_until > now else None,
            ),
        )

    def verify_api_key(self, plaintext: str, origin: Origin) -> CredentialFacts:
        """Find and verify a plaintext key; INVALID_API_KEY without saying what was wrong.

        Failed attempts count against the key's lookup handle and ``origin.client_ip``;
        RATE_LIMITED once either has failed too often, or when the argon2 pool is full.
        """
        fingerprint = self._verified.fingerprint(plaintext)
        known = self._verified.secret(fingerprint)
        if known is not None:  # verified before, so well-formed: no need to parse it again
            facts = self._known_secret(*known)
            if facts is not None:
                return facts
            self._verified.forget_secret(fingerprint)
        parsed = apikeys.parse(plaintext)
        if parsed is None:
            raise invalid_api_key()
        self._throttle.check(parsed.lookup, origin)
        found = self._store.by_lookup(parsed.lookup)
        # The hash work runs for unknown keys too, so timing does not tell them apart.
        version = self._matching_version(found[1] if found else None, parsed.secret)
        if version is None or found is None or found[0].key.prefix != parsed.prefix:
            self._throttle.failed(parsed.lookup, origin.client_ip)
            raise invalid_api_key()
        live = found[0]
        self._verified.remember_secret(fingerprint, live.key.id, version)
        return CredentialFacts(live.key, live.organization, live.principal, version)

    def verify_password(self, principal_id: str, password: str) -> bool:
        """Whether ``password`` is the password of service account ``principal_id`` (constant work)."""
        return self._hasher.verify(self._store.password_hash(principal_id), password)

    def verify_token(self, token: str) -> tuple[TokenClaims, CredentialFacts]:
        """A token's claims and the live state behind it; INVALID_TOKEN when revoked or outlived its key."""
        claims = self.claims(token)
        return claims, self._token_facts(claims)

    def claims(self, token: str) -> TokenClaims:
        """The claims of a token whose signature, headers, issuer, audience and times verify."""
        fingerprint = self._verified.fingerprint(token)
        claims = self._verified.token(fingerprint)
        if claims is None:
            claims = self.codec.verify(token)
            self._verified.remember_token(fingerprint, claims)
        return claims

    def _token_facts(self, claims: TokenClaims) -> CredentialFacts:
        now = datetime.now(UTC)
        if self._store.token_revoked(claims.jti):
            raise invalid_token()
        live = self._store.live_key(claims.key_id, claims.subject)
        if (
            live is None
            or live.key.org_id != claims.org_id
            or live.principal.org_id != claims.org_id
            or live.key.state(now) is not KeyState.ACTIVE
        ):
            raise invalid_token()
        if not version_current(
            claims.key_version, live.secret_version, live.key.previous_secret_expire_time, now
        ):
            raise invalid_token("the token's key was rotated since it was minted")
        return CredentialFacts(live.key, live.organization, live.principal, claims.key_version)

    def _known_secret(self, key_id: str, version: int) -> CredentialFacts | None:
        live = self._store.live_key(key_id)
        if live is None or not version_current(
            version, live.secret_version, live.key.previous_secret_expire_time, datetime.now(UTC)
        ):
            return None
        return CredentialFacts(live.key, live.organization, live.principal, version)

    def _matching_version(self, secrets: KeySecrets | None, secret: str) -> int | None:
        if secrets is None:
            self._hasher.verify(None, secret)
            return None
        if self._hasher.verify(secrets.secret_hash, secret):
            return secrets.version
        if (
            secrets.previous_secret_hash is not None
            and version_current(
                secrets.version - 1, secrets.version, secrets.previous_secret_expire_time, datetime.now(UTC)
            )
            and self._hasher.verify(secrets.previous_secret_hash, secret)
        ):
            return secrets.version - 1
        return None


def _earliest(*times: datetime | None) -> datetime | None:
    return min((t for t in times if t is not None), default=None)


def require_scope(caller: Caller, scope: str) -> None:
    """Raise INSUFFICIENT_SCOPE unless the caller's scopes grant ``scope``."""
    denial = permission_denial(caller.scopes, caller.resources, [scope], None)
    if denial is not None:
        raise denial
