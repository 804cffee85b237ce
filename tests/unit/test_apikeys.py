"""The plaintext key format: parts, prefix, last4, entropy and the checksum."""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from identity.crypto import apikeys
from identity.domain.model import KeyKind

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
FORMAT = re.compile(r"(idk|idp)_(live|test)_[0-9A-Za-z]{16}_[0-9A-Za-z]{39}")


@pytest.mark.parametrize(
    ("kind", "environment", "tag"),
    [
        (KeyKind.SECRET, "live", "idk_live_"),
        (KeyKind.SECRET, "test", "idk_test_"),
        (KeyKind.PUBLISHABLE, "live", "idp_live_"),
        (KeyKind.PUBLISHABLE, "test", "idp_test_"),
    ],
)
def test_a_generated_key_has_the_documented_format(kind: KeyKind, environment: str, tag: str) -> None:
    new = apikeys.generate(kind, environment)
    assert FORMAT.fullmatch(new.plaintext), new.plaintext
    assert new.plaintext.startswith(tag)
    assert new.parsed.prefix == f"{tag}{new.parsed.lookup}"
    assert new.plaintext.startswith(new.parsed.prefix + "_" + new.parsed.secret)
    assert new.last4 == new.plaintext[-4:] and len(new.last4) == 4
    assert (new.parsed.kind, new.parsed.environment) == (kind, environment)
    assert apikeys.parse(new.plaintext) == new.parsed


def test_the_prefix_shows_no_secret() -> None:
    new = apikeys.generate(KeyKind.SECRET, "live")
    assert new.parsed.secret not in new.parsed.prefix
    # last4 lies inside the checksum, after the secret.
    secret_end = new.plaintext.index(new.parsed.secret) + len(new.parsed.secret)
    assert secret_end == len(new.plaintext) - apikeys.CHECKSUM_LENGTH
    assert apikeys.CHECKSUM_LENGTH >= 4


def test_the_secret_carries_at_least_190_bits() -> None:
    keys = [apikeys.generate(KeyKind.SECRET, "live") for _ in range(200)]
    for new in keys:
        assert len(new.parsed.secret) * math.log2(len(BASE62)) >= 190
        assert set(new.parsed.secret) <= set(BASE62)
    # Random, not a counter or a clock: all distinct, and every base62 character turns up.
    assert len({new.parsed.secret for new in keys}) == len(keys)
    assert len({new.parsed.lookup for new in keys}) == len(keys)
    assert set("".join(new.parsed.secret for new in keys)) == set(BASE62)


@pytest.mark.parametrize("kind", [KeyKind.SECRET, KeyKind.PUBLISHABLE])
def test_the_checksum_rejects_every_single_character_change(kind: KeyKind) -> None:
    for _ in range(3):
        plaintext = apikeys.generate(kind, "live").plaintext
        for i, original in enumerate(plaintext):
            for replacement in BASE62 + "_":
                if replacement == original:
                    continue
                changed = plaintext[:i] + replacement + plaintext[i + 1 :]
                assert apikeys.parse(changed) is None, (i, replacement)


def test_the_checksum_rejects_swapped_neighbours_and_a_changed_tag() -> None:
    plaintext = apikeys.generate(KeyKind.SECRET, "live").plaintext
    start = len("idk_live_")
    for i in range(start, len(plaintext) - 1):
        if plaintext[i] != plaintext[i + 1] and "_" not in plaintext[i : i + 2]:
            swapped = plaintext[:i] + plaintext[i + 1] + plaintext[i] + plaintext[i + 2 :]
            assert apikeys.parse(swapped) is None, i
    assert apikeys.parse("idp" + plaintext[3:]) is None
    assert apikeys.parse(plaintext.replace("_live_", "_test_", 1)) is None


GARBAGE = [
    "",
    "idk_live_",
    "hello",
    "Bearer idk_live_x",
    "idk_prod_" + "a" * 16 + "_" + "b" * 39,
    "idx_live_" + "a" * 16 + "_" + "b" * 39,
    "idk_live_" + "a" * 16 + "_" + "b" * 38,
    "idk_live_" + "a" * 16 + "_" + "b" * 40,
    "idk_live_" + "a" * 15 + "_" + "b" * 39,
    "idk_live_" + "a" * 16 + "-" + "b" * 39,
    "idk_live_" + "a" * 16 + "_" + "b" * 38 + "!",
    "IDK_LIVE_" + "a" * 16 + "_" + "b" * 39,
    "idk_live_" + "a" * 5000,
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln",
]


@pytest.mark.parametrize("text", GARBAGE, ids=lambda t: repr(t[:40]))
def test_parse_refuses_garbage(text: str) -> None:
    assert apikeys.parse(text) is None


def test_parse_refuses_a_real_key_with_anything_around_it() -> None:
    plaintext = apikeys.generate(KeyKind.SECRET, "live").plaintext
    for variant in (f" {plaintext}", f"{plaintext} ", f"{plaintext}\n", f"x{plaintext}", f"{plaintext}0"):
        assert apikeys.parse(variant) is None, repr(variant)
    assert apikeys.parse(plaintext) is not None


@given(st.text(max_size=100))
def test_parse_never_accepts_random_text(text: str) -> None:
    # A random string passes the checksum about once in 2**32 tries; the format alone stops the rest.
    assert apikeys.parse(text) is None


def test_a_lookup_passed_to_generate_is_kept() -> None:
    first = apikeys.generate(KeyKind.SECRET, "live")
    again = apikeys.generate(KeyKind.SECRET, "live", first.parsed.lookup)
    assert again.parsed.lookup == first.parsed.lookup
    assert again.parsed.prefix == first.parsed.prefix
    assert again.parsed.secret != first.parsed.secret
    assert again.plaintext != first.plaintext
    assert apikeys.parse(again.plaintext) == again.parsed
    assert apikeys.generate(KeyKind.SECRET, "live").parsed.lookup != first.parsed.lookup
