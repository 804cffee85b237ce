"""Ids: 26 Crockford base32 digits after the prefix, in creation order."""

from __future__ import annotations

import secrets

from identity.ids import crockford, new_id

DIGITS = "0123456789abcdefghjkmnpqrstvwxyz"


def digit_by_digit(value: int) -> str:
    """The plain definition: 26 base-32 digits of ``value``, most significant first."""
    return "".join(DIGITS[(value >> (5 * place)) & 31] for place in reversed(range(26)))


def test_crockford_digits_are_the_plain_base32_digits() -> None:
    edges = [0, 1, 31, 32, 2**80 - 1, 2**80, 2**128 - 1]
    for value in edges + [secrets.randbits(128) for _ in range(2000)]:
        assert crockford(value) == digit_by_digit(value), value


def test_ids_have_their_prefix_and_sort_in_creation_order() -> None:
    made = [new_id("key") for _ in range(5000)]
    assert all(i.startswith("key_") and len(i) == 30 and set(i[4:]) <= set(DIGITS) for i in made)
    assert made == sorted(made) and len(set(made)) == len(made)
