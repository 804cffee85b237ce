"""Fuzz target: arbitrary strings as API keys and tokens, to every parser of a credential.

The parsers: the metadata reader (``authorization``, ``x-api-key``), the API key format, a
token's header, the token codec, the full authenticator, and identity.client's offline
verification (what other services run).

Input layout: byte 0 picks the parser (modulo PARSERS), the rest is the credential, UTF-8 with
undecodable bytes replaced (protobuf strings and metadata are valid text). Placeholders of the
fuzz world (``$PLATFORM_KEY``, ``$PLATFORM_TOKEN``, ``$TENANT_KEY``) are substituted, so the
fuzzer can also try real credentials with bytes added, cut or changed.

Invariant: each parser returns a refusal or raises :class:`IdentityError` with a reason it may
give; it never raises anything else, and a verified identity comes only from a string that is
exactly a real credential.

Run: ``.venv/bin/python -m fuzz credentials fuzz/corpus/credentials -max_total_time=300``.
"""

from __future__ import annotations

from collections.abc import Callable

import jwt

from fuzz.common import World, invoke, world
from identity.client import jwks
from identity.crypto import apikeys
from identity.domain.errors import STATUS_OF_REASON, IdentityError, Reason
from identity.domain.model import Origin
from identity.metadata import credential_from
from identity.tokens import token_kid
from identity.v1.token_service_pb2 import GetJwksRequest, GetJwksResponse


def _authorization(the_world: World, text: str) -> None:
    try:
        credential = credential_from((("authorization", text),))
    except IdentityError as error:
        assert error.reason is Reason.MISSING_AUTHORIZATION, error.reason
        return
    assert credential and credential == credential.strip() and credential in text


def _x_api_key(the_world: World, text: str) -> None:
    assert credential_from((("x-api-key", text),)) == (text or None)


def _api_key(the_world: World, text: str) -> None:
    parsed = apikeys.parse(text)
    if parsed is not None:  # well-formed: its parts are the text's, its checksum verified
        assert text.startswith(f"{parsed.prefix}_{parsed.secret}"), text
        assert len(text) == len(parsed.prefix) + 1 + apikeys.SECRET_LENGTH + apikeys.CHECKSUM_LENGTH


def _token_kid(the_world: World, text: str) -> None:
    try:
        kid = token_kid(text)
    except IdentityError as error:
        assert error.reason is Reason.INVALID_TOKEN, error.reason
        return
    assert kid.startswith("sk_"), kid


def _verify_token(the_world: World, text: str) -> None:
    try:
        claims = the_world.server.authenticator.codec.verify(text)
    except IdentityError as error:
        assert error.reason in (Reason.INVALID_TOKEN, Reason.EXPIRED_TOKEN), error.reason
        return
    assert text == the_world.values["$PLATFORM_TOKEN"], f"verified a token the harness did not mint: {claims}"


def _authenticate(the_world: World, text: str) -> None:
    try:
        caller = the_world.server.authenticator.authenticate(text, "127.0.0.1", Origin("", "127.0.0.1"))
    except IdentityError as error:
        # A refusal of a credential: UNAUTHENTICATED, PERMISSION_DENIED or RATE_LIMITED, no other.
        assert STATUS_OF_REASON[error.reason] in ("UNAUTHENTICATED", "PERMISSION_DENIED") or (
            error.reason is Reason.RATE_LIMITED
        ), error.reason
        return
    assert the_world.real_credential(text), f"authenticated a fuzzed credential: {caller}"


_JWKS: dict[int, dict[str, jwt.PyJWK]] = {}


def _offline(the_world: World, text: str) -> None:
    # What identity.client's OfflineAuthorizer runs in other services, against the world's JWK Set.
    keys = _JWKS.get(id(the_world))
    if keys is None:
        _, responses = invoke(the_world.server, "/identity.v1.TokenService/GetJwks", GetJwksRequest(), ())
        published = responses[0]
        assert isinstance(published, GetJwksResponse)
        keys = _JWKS[id(the_world)] = jwks.parse_jwks(published.jwks_json)
    try:
        identity = jwks.verify(text, keys.get(token_kid(text)), jwks.DEFAULT_ISSUER, jwks.DEFAULT_AUDIENCE)
    except IdentityError as error:
        assert error.reason in (Reason.INVALID_TOKEN, Reason.EXPIRED_TOKEN), error.reason
        return
    assert text == the_world.values["$PLATFORM_TOKEN"], f"verified offline a token not minted: {identity}"


PARSERS: tuple[Callable[[World, str], None], ...] = (
    _authorization,
    _x_api_key,
    _api_key,
    _token_kid,
    _verify_token,
    _authenticate,
    _offline,
)


def check_credential(data: bytes, the_world: World | None = None) -> None:
    """Run one input and assert the invariants (the fuzz entry point, also used by the corpus test).

    In ``the_world``, by default :func:`world`.
    """
    if not data:
        return
    the_world = the_world or world()
    text = the_world.substitute(data[1:].decode("utf-8", "replace"))
    PARSERS[data[0] % len(PARSERS)](the_world, text)


def encode(parser: Callable[[World, str], None], text: str) -> bytes:
    """The input that runs ``text`` through ``parser`` (for seeding the corpus)."""
    return bytes([PARSERS.index(parser)]) + text.encode()
