"""Token signatures: made by cryptography directly, they must be the JWS signatures PyJWT verifies."""

from __future__ import annotations

import pytest
from jwt import get_algorithm_by_name

from identity.crypto import signing

MESSAGE = b"eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJwcm5fMSJ9"


@pytest.mark.parametrize("algorithm", signing.ALGORITHMS)
def test_a_signature_verifies_as_jws_and_fails_for_other_bytes(algorithm: str) -> None:
    key = signing.generate("sk_test", algorithm)
    jws = get_algorithm_by_name(algorithm)

    signature = key.sign(MESSAGE)

    assert jws.verify(MESSAGE, key.public_key, signature)
    assert not jws.verify(MESSAGE + b"x", key.public_key, signature)
    tampered = bytes([signature[0] ^ 1]) + signature[1:]
    assert not jws.verify(MESSAGE, key.public_key, tampered)


def test_es256_signatures_are_r_and_s_of_32_bytes_each() -> None:
    # RFC 7518 3.4: not DER, which is what the curve's own sign() gives and varies in length.
    key = signing.generate("sk_test", "ES256")

    assert {len(key.sign(MESSAGE + bytes([i]))) for i in range(50)} == {64}


@pytest.mark.parametrize("algorithm", ["EdDSA", "RS256"])
def test_deterministic_algorithms_sign_exactly_as_pyjwt(algorithm: str) -> None:
    key = signing.generate("sk_test", algorithm)

    assert key.sign(MESSAGE) == get_algorithm_by_name(algorithm).sign(MESSAGE, key.private_key)
