"""Token use cases: the four exchange flows, introspection, revocation, signing keys and JWKS."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from identity.app.background import BackgroundWriter
from identity.app.common import audit_event
from identity.authz import Authenticator, invalid_api_key
from identity.domain import scopes as scope_rules
from identity.domain.decisions import CredentialFacts, credential_denial
from identity.domain.errors import STATUS_OF_REASON, IdentityError, Reason, invalid
from identity.domain.model import AuditEvent, AuditOutcome, Caller, Origin, PrincipalKind, RequestInfo
from identity.domain.validation import Violations
from identity.keyring import Keyring
from identity.store.database import Database
from identity.store.repository import Repository
from identity.store.tokens import TokenRepository
from identity.tokens import DEFAULT_LIFETIME, MAX_LIFETIME, TokenClaims, TokenCodec

ANONYMOUS = Caller("", "", "", (), (), platform=False)


@dataclass(frozen=True)
class TokenOptions:
    """What the caller asks of the token: audience, down-scoping, lifetime.

    ``scope_string``: the scopes came space-separated in a ``scope`` field (client credentials),
    which is then the field bad ones are reported under.
    """

    audience: str = ""
    scopes: tuple[str, ...] = ()
    lifetime: timedelta = field(default=timedelta(0))
    scope_string: bool = False


@dataclass(frozen=True)
class IssuedToken:
    """A minted token and what it says."""

    token: str
    claims: TokenClaims


class TokenExchange:
    """Turns verified API keys into short-lived JWTs, and answers questions about those JWTs."""

    def __init__(
        self, db: Database, authenticator: Authenticator, keyring: Keyring, writer: BackgroundWriter
    ) -> None:
        """Verify with ``authenticator``, sign with ``keyring``, audit into ``db``, note key use via ``writer``."""
        self._db = db
        self._writer = writer
        self._authenticator = authenticator
        self._codec: TokenCodec = authenticator.codec
        self._keyring = keyring

    def exchange_api_key(self, origin: Origin, api_key: str, options: TokenOptions) -> IssuedToken:
        """v2: the key alone. A key created with ``require_key_id`` needs v3 or client credentials."""

        def needs_no_key_id(facts: CredentialFacts) -> CredentialFacts:
            if facts.key.require_key_id:
                raise IdentityError(
                    Reason.INVALID_API_KEY, "this key must be exchanged together with its key id"
                )
            return facts

        verify = functools.partial(self._authenticator.verify_api_key, api_key, origin)
        return self._exchange("v2", origin, "", verify, options, needs_no_key_id)

    def exchange_api_key_with_id(
        self, origin: Origin, key_id: str, api_key: str, options: TokenOptions
    ) -> IssuedToken:
        """v3: the key id and the key; both must match."""
        verify = functools.partial(self._verify_pair, "key_id", key_id, api_key, origin)
        return self._exchange("v3", origin, key_id, verify, options)

    def exchange_client_credentials(
        self,
        origin: Origin,
        grant_type: str,
        client_id: str,
        client_secret: str,
        org_id: str,
        options: TokenOptions,
    ) -> IssuedToken:
        """OAuth 2.0 client credentials: key id as client id, key as secret, in the key's organization."""
        if grant_type != "client_credentials":
            raise invalid("grant_type", "must be client_credentials")

        def in_workspace(facts: CredentialFacts) -> CredentialFacts:
            if facts.key.org_id != org_id:
                raise invalid_api_key()
            return facts

        verify = functools.partial(self._verify_pair, "client_id", client_id, client_secret, origin)
        return self._exchange("client_credentials", origin, client_id, verify, options, in_workspace)

    def exchange_password(
        self, origin: Origin, username: str, password: str, client_id: str, client_secret: str
    ) -> IssuedToken:
        """Legacy v1: a service account's password plus a key of the same organization."""

        def as_account(facts: CredentialFacts) -> CredentialFacts:
            password_ok = self._authenticator.verify_password(username, password)
            with self._db.read() as session:
                account = Repository(session).get_principal(username)
            if (
                not password_ok
                or account is None
                or account.kind is not PrincipalKind.SERVICE_ACCOUNT
                or account.org_id != facts.key.org_id
            ):
                raise invalid_api_key()
            return CredentialFacts(facts.key, facts.organization, account, facts.secret_version)

        verify = functools.partial(self._verify_pair, "client_id", client_id, client_secret, origin)
        return self._exchange("v1", origin, client_id, verify, TokenOptions(), as_account)

    def introspect(self, token: str) -> TokenClaims | None:
        """The claims of a token that is valid now, or None (RFC 7662 says nothing of why)."""
        try:
            claims, facts = self._authenticator.verify_token(token)
        except IdentityError as error:
            if error.reason is Reason.UNAVAILABLE:
                raise
            return None
        if credential_denial(facts, datetime.now(UTC), None, check_ip=False) is not None:
            return None
        return claims

    def revoke(self, token: str) -> None:
        """Revoke a token by its ``jti``. As RFC 7009 asks, an invalid token is no error."""
        try:
            claims = self._authenticator.claims(token)
        except IdentityError as error:
            if error.reason is Reason.UNAVAILABLE:
                raise
            return
        with self._db.write() as session:
            TokenRepository(session).revoke_token(
                claims.jti, claims.org_id, claims.expire_time, datetime.now(UTC)
            )

    def rotate_signing_key(self, info: RequestInfo, algorithm: str) -> tuple[str, str]:
        """Make a new signing key current (platform credential only); return its kid and algorithm."""
        if not info.caller.platform:
            raise IdentityError(
                Reason.INSUFFICIENT_SCOPE, "only a platform credential may rotate signing keys"
            )
        key = self._keyring.rotate(algorithm or None)
        with self._db.write() as session:
            Repository(session).add_audit_event(
                audit_event(
                    info,
                    "signing_key.rotate",
                    key.kid,
                    info.caller.org_id,
                    details={"algorithm": key.algorithm},
                )
            )
        return key.kid, key.algorithm

    def jwks_json(self) -> str:
        """The JWK Set of every published public key, as JSON."""
        return json.dumps(self._keyring.jwks(), separators=(",", ":"))

    def _verify_pair(self, field: str, key_id: str, api_key: str, origin: Origin) -> CredentialFacts:
        """The key ``api_key`` verifies as, which must be ``key_id`` (given in request ``field``)."""
        problems = Violations()
        problems.text(field, key_id, max_length=64, required=True)
        problems.raise_if_any()
        facts = self._authenticator.verify_api_key(api_key, origin)
        if facts.key.id != key_id:
            raise invalid_api_key()
        return facts

    def _exchange(
        self,
        flow: str,
        origin: Origin,
        claimed_key_id: str,
        verify: Callable[[], CredentialFacts],
        options: TokenOptions,
        refine: Callable[[CredentialFacts], CredentialFacts] | None = None,
    ) -> IssuedToken:
        """Verify the credential, apply the flow's own rule (``refine``), judge, mint and audit."""
        facts: CredentialFacts | None = None
        try:
            audience = self._audience(options.audience)
            lifetime = _lifetime(options.lifetime)
            problems = Violations()
            if options.scope_string:
                problems.scopes("scope", options.scopes, required=False, indexed=False)
            else:
                problems.scopes("scopes", options.scopes, required=False)
            problems.raise_if_any()
            facts = verify()
            if refine is not None:
                facts = refine(facts)
            now = datetime.now(UTC)
            denial = credential_denial(facts, now, lambda: origin.client_ip)
            if denial is not None:
                raise denial
            key = facts.key
            beyond = scope_rules.uncovered(key.scopes, options.scopes)
            if beyond:
                raise IdentityError(Reason.INSUFFICIENT_SCOPE, f"the key does not hold: {' '.join(beyond)}")
            token, claims = self._codec.mint(
                subject=facts.principal.id,
                org_id=key.org_id,
                key_id=key.id,
                key_version=facts.secret_version,
                scopes=options.scopes or key.scopes,
                audience=audience,
                lifetime=lifetime,
                not_after=key.expire_time,
            )
        except IdentityError as error:
            self._audit(flow, origin, facts, claimed_key_id, error)
            raise
        self._audit(flow, origin, facts, key.id, None)
        self._writer.touch(key.id)
        return IssuedToken(token, claims)

    def _audience(self, requested: str) -> str:
        if not requested:
            return self._codec.audiences[0]
        if requested not in self._codec.audiences:
            raise invalid("audience", f"must be one of: {', '.join(self._codec.audiences)}")
        return requested

    def _audit(
        self,
        flow: str,
        origin: Origin,
        facts: CredentialFacts | None,
        target: str,
        error: IdentityError | None,
    ) -> None:
        caller = ANONYMOUS
        if facts is not None:
            caller = Caller(
                facts.principal.id, facts.key.org_id, facts.key.id, facts.key.scopes, (), platform=False
            )
        outcome = AuditOutcome.SUCCESS
        if error is not None:
            outcome = (
                AuditOutcome.DENIED
                if STATUS_OF_REASON[error.reason] == "PERMISSION_DENIED"
                else AuditOutcome.FAILURE
            )

        def event() -> AuditEvent:
            return audit_event(
                RequestInfo(caller, peer=origin.peer, user_agent=origin.user_agent),
                "token.exchange",
                target,
                caller.org_id,
                outcome=outcome,
                reason=error.reason.value if error else "",
                details={"flow": flow, **({"deprecated": "true"} if flow == "v1" else {})},
            )

        if error is not None and error.reason is Reason.RATE_LIMITED:
            self._writer.record_throttled(("token.exchange", flow, target, caller.org_id), event)
        else:
            self._writer.record(event())


def _lifetime(requested: timedelta) -> timedelta:
    if requested == timedelta(0):
        return DEFAULT_LIFETIME
    if requested < timedelta(seconds=1) or requested > MAX_LIFETIME:
        raise invalid("lifetime", "must be between 1 second and 1 hour")
    return requested
