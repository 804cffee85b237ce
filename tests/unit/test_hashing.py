"""argon2id hashing of secrets and passwords."""

from __future__ import annotations

import pytest

from identity.crypto.hashing import Argon2Profile, SecretHasher

CHEAP = Argon2Profile(memory_kib=1024, time_cost=1, parallelism=1)


@pytest.fixture(scope="module")
def default_hasher() -> SecretHasher:
    return SecretHasher(Argon2Profile())


@pytest.fixture(scope="module")
def cheap() -> SecretHasher:
    return SecretHasher(CHEAP)


def test_the_default_profile_is_the_owasp_minimum(default_hasher: SecretHasher) -> None:
    assert Argon2Profile() == Argon2Profile(memory_kib=19456, time_cost=2, parallelism=1)
    encoded = default_hasher.hash("a secret")
    assert encoded.startswith("$argon2id$v=19$m=19456,t=2,p=1$"), encoded
    assert default_hasher.verify(encoded, "a secret")
    assert not default_hasher.verify(encoded, "a secreT")


def test_the_profile_is_written_into_the_hash(cheap: SecretHasher) -> None:
    assert cheap.hash("x").startswith("$argon2id$v=19$m=1024,t=1,p=1$")


def test_the_hash_holds_no_secret_and_is_salted(cheap: SecretHasher) -> None:
    secret = "Zq8Wm3Kx9Lp2Rt7Vb4Nc6Hd1Jf5Gs0Ya"
    first, second = cheap.hash(secret), cheap.hash(secret)
    assert secret not in first and first != second
    assert cheap.verify(first, secret) and cheap.verify(second, secret)


@pytest.mark.parametrize("attempt", ["", "b", "secret ", " secret", "Secret", "secret\x00", "secretsecret"])
def test_verify_is_false_for_any_other_secret(cheap: SecretHasher, attempt: str) -> None:
    encoded = cheap.hash("secret")
    assert cheap.verify(encoded, "secret")
    assert cheap.verify(encoded, attempt) is False


def test_a_hash_made_under_another_profile_still_verifies(
    cheap: SecretHasher, default_hasher: SecretHasher
) -> None:
    assert default_hasher.verify(cheap.hash("moved"), "moved")


@pytest.mark.parametrize("secret", ["anything", "decoy", ""])
def test_verify_without_a_hash_is_false(cheap: SecretHasher, secret: str) -> None:
    assert cheap.verify(None, secret) is False


@pytest.mark.parametrize("encoded", ["", "not a hash", "$argon2id$v=19$m=1024,t=1,p=1$garbage", "$2b$12$abc"])
def test_verify_against_a_broken_hash_is_false(cheap: SecretHasher, encoded: str) -> None:
    assert cheap.verify(encoded, "decoy") is False
    assert cheap.verify(encoded, "anything") is False
