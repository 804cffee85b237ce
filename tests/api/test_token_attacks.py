"""The JWT attack corpus: each forged or tampered token is inactive to IntrospectToken and
refused (with the exact reason) as a caller credential."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import time
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from identity.config import Settings
from identity.crypto.signing import load_kek
from identity.keyring import Keyring
from identity.v1 import (
    authorization_service_pb2,
    authorization_service_pb2_grpc,
    common_pb2,
    key_service_pb2,
    token_service_pb2,
    token_service_pb2_grpc,
)
from tests.conftest import Harness
from tests.helpers import Admin, expect_error


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def segment(value: dict[str, Any]) -> str:
    return b64(json.dumps(value, separators=(",", ":")).encode())


class Forge:
    """Builds tokens around a real one: its claims, the real signing key, and variations."""

    def __init__(self, harness: Harness, settings: Settings) -> None:
        self.tokens = token_service_pb2_grpc.TokenServiceStub(harness.channel)
        self.real = self.tokens.ExchangeApiKey(
            token_service_pb2.ExchangeApiKeyRequest(api_key=harness.platform_key)
        ).access_token
        self.header = jwt.get_unverified_header(self.real)
        self.claims = jwt.decode(self.real, options={"verify_signature": False})
        keyring = Keyring(harness.db, load_kek(settings.kek, settings.kek_file), "ES256")
        self.key = keyring.current()
        assert self.key.kid == self.header["kid"]
        self.harness = harness
        self.org_id = harness.platform_org_id

    def signed(self, header: dict[str, Any] | None = None, **claims: Any) -> str:
        """Properly signed with the real key, with header fields and claims changed."""
        payload = {k: v for k, v in {**self.claims, **claims}.items() if v is not None}
        fields = {k: v for k, v in {**self.header, **(header or {})}.items() if v is not None}
        headers = {k: v for k, v in fields.items() if k != "alg"}
        return jwt.encode(payload, self.key.private_key, algorithm="ES256", headers=headers)

    def raw(self, header: dict[str, Any], signature: bytes = b"") -> str:
        body = f"{segment(header)}.{segment(self.claims)}"
        return f"{body}.{b64(signature)}"


def attacks(forge: Forge) -> dict[str, tuple[str, str]]:
    now = int(time.time())
    public_pem = forge.key.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    hs_header = {**forge.header, "alg": "HS256"}
    hs_body = f"{segment(hs_header)}.{segment(forge.claims)}"
    hs_signature = hmac.new(public_pem, hs_body.encode(), hashlib.sha256).digest()
    stranger = ec.generate_private_key(ec.SECP256R1())
    unknown_signer = jwt.encode(
        forge.claims, stranger, algorithm="ES256", headers={"typ": "at+jwt", "kid": forge.key.kid}
    )
    unknown_kid = jwt.encode(
        forge.claims, stranger, algorithm="ES256", headers={"typ": "at+jwt", "kid": "sk_" + "0" * 26}
    )
    head, body, signature = forge.real.split(".")
    raw_signature = base64.urlsafe_b64decode(signature + "==")
    r, s = int.from_bytes(raw_signature[:32], "big"), int.from_bytes(raw_signature[32:], "big")
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    der_signature = b64(encode_dss_signature(r, s))
    invalid = "INVALID_TOKEN"
    return {
        "alg none": (forge.raw({**forge.header, "alg": "none"}), invalid),
        "alg none, no kid": (forge.raw({"alg": "none", "typ": "at+jwt"}), invalid),
        "HS256 with the public key": (f"{hs_body}.{b64(hs_signature)}", invalid),
        "signed by an unknown key under a real kid": (unknown_signer, invalid),
        "unknown kid": (unknown_kid, invalid),
        "path kid": (forge.signed({"kid": "../../../../etc/passwd"}), invalid),
        "sql kid": (forge.signed({"kid": "sk_' OR '1'='1"}), invalid),
        "absurd kid": (forge.signed({"kid": "x" * 3000}), invalid),
        "jku header": (forge.signed({"jku": "https://attacker.example/jwks.json"}), invalid),
        "x5u header": (forge.signed({"x5u": "https://attacker.example/cert.pem"}), invalid),
        "jwk header": (forge.signed({"jwk": forge.key.public_jwk()}), invalid),
        "typ JWT": (forge.signed({"typ": "JWT"}), invalid),
        "no typ": (forge.signed({"typ": None}), invalid),
        "wrong iss": (forge.signed(iss="https://evil.example"), invalid),
        "wrong aud": (forge.signed(aud="someone-else"), invalid),
        "no exp": (forge.signed(exp=None), invalid),
        "exp beyond leeway": (forge.signed(exp=now - 120, iat=now - 1000, nbf=now - 1000), "EXPIRED_TOKEN"),
        "nbf in the future": (forge.signed(nbf=now + 300), invalid),
        "truncated signature": (forge.real[:-10], invalid),
        # Found by the credentials fuzzer: PyJWT decodes a padded signature, so the real token
        # with '==' appended verified, here and in identity.client's offline verification.
        "padded signature": (forge.real + "==", invalid),
        "padded signature, one": (forge.real + "=", invalid),
        "re-encoded signature (DER)": (f"{head}.{body}.{der_signature}", invalid),
        "signature of another body": (
            f"{head}.{segment({**forge.claims, 'sub': 'usr_attacker'})}.{signature}",
            invalid,
        ),
        "garbage": ("eyJub3QK.YQ.dG9rZW4", invalid),
        **{f"malleable: {name}": (token, invalid) for name, token in malleable_variants(forge.real).items()},
    }


def malleable_variants(token: str) -> dict[str, str]:
    """Other spellings of the same signature bytes: base64url that decoders forgive, but not canonical."""
    head, body, signature = token.split(".")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    unused_bits = len(signature) * 6 % 8  # 64 bytes in 86 characters: the last one has 4 spare bits
    assert unused_bits, "the signature must end in a partial character"
    last = alphabet.index(signature[-1])
    same_bytes = alphabet[last ^ 1]  # flips a spare bit: decodes to the very same signature
    assert base64.urlsafe_b64decode(signature[:-1] + same_bytes + "==") == base64.urlsafe_b64decode(
        signature + "=="
    )
    return {
        "spare bits of the last character": f"{head}.{body}.{signature[:-1]}{same_bytes}",
        "padded signature": f"{token}==",
        "one pad character": f"{token}=",
        "space inside the signature": f"{head}.{body}.{signature[:40]} {signature[40:]}",
        "newline inside the signature": f"{head}.{body}.{signature[:40]}\n{signature[40:]}",
        "trailing newline": f"{token}\n",
        "trailing space": f"{token} ",
        "trailing non-alphabet character": f"{token}!",
        "standard base64 alphabet": f"{head}.{body}.{signature.replace('-', '+').replace('_', '/')}"
        if "-" in signature or "_" in signature
        else f"{head}.{body}.{signature}+",
    }


@pytest.fixture
def forge(harness: Harness, settings: Settings) -> Forge:
    return Forge(harness, settings)


def test_the_real_token_passes(forge: Forge) -> None:
    assert forge.tokens.IntrospectToken(token_service_pb2.IntrospectTokenRequest(token=forge.real)).active
    assert forge.tokens.IntrospectToken(token_service_pb2.IntrospectTokenRequest(token=forge.signed())).active


def test_expired_within_leeway_still_passes(forge: Forge) -> None:
    now = int(time.time())
    token = forge.signed(exp=now - 30, iat=now - 600, nbf=now - 600)
    assert forge.tokens.IntrospectToken(token_service_pb2.IntrospectTokenRequest(token=token)).active


def test_every_attack_is_refused(forge: Forge) -> None:
    checks = authorization_service_pb2_grpc.AuthorizationServiceStub(forge.harness.channel)
    for name, (token, reason) in attacks(forge).items():
        reply = forge.tokens.IntrospectToken(token_service_pb2.IntrospectTokenRequest(token=token))
        assert reply == token_service_pb2.IntrospectTokenResponse(active=False), name
        decision = checks.Check(authorization_service_pb2.CheckRequest(credential=token, permissions=["*"]))
        assert not decision.allowed and common_pb2.DecisionReason.Name(decision.reason) == (
            f"DECISION_REASON_{reason}"
        ), name
        if not token.isprintable() or token != token.strip():
            continue  # metadata cannot carry it, or drops the surrounding space (RFC 9110 OWS)
        caller = Admin(forge.harness.channel, token)
        request = key_service_pb2.ListKeysRequest(org_id=forge.org_id)
        call = functools.partial(caller.keys.ListKeys, request, metadata=caller.metadata)
        try:
            details = expect_error(call, grpc.StatusCode.UNAUTHENTICATED, reason)
        except AssertionError as error:
            raise AssertionError(f"{name}: {error}") from None
        assert token not in details.message, name
