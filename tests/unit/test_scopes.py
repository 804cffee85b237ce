"""Scope grammar, matching and rate tiers, with property tests for the no-escalation rule."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from identity.domain.scopes import (
    MAX_SCOPE_LENGTH,
    covers,
    grants,
    missing,
    rate_tier,
    scope_error,
    uncovered,
)

VALID = [
    "*",
    "read",
    "admin:apikeys",
    "inventory:*",
    "inventory:read:own",
    "a.b-c_d:0-9",
    "x:y:z:*",
    "rate:standard",
    "rate:premium",
    "rate:enterprise",
    "rate",
    "track:events",
    "a" * MAX_SCOPE_LENGTH,
]

INVALID = [
    "",
    ":",
    "Read:All",
    "inventory:Read",
    "INVENTORY",
    "a::b",
    "a:",
    ":a",
    "a:b:",
    "inventory:*:read",
    "*:read",
    "*x",
    "x*",
    "inventory:*x",
    "inventory:x*",
    "**",
    "*:*",
    "inventöry:read",
    "\uff49nventory",
    "inventory:read\u200b",
    "inventory read",
    " inventory",
    "inventory:read\n",
    "inventory/read",
    "a" * (MAX_SCOPE_LENGTH + 1),
    "rate:gold",
    "rate:*",
    "rate:Premium",
    "rate:premium:x",
]


@pytest.mark.parametrize("scope", VALID, ids=repr)
def test_valid_scopes_are_accepted(scope: str) -> None:
    assert scope_error(scope) is None


@pytest.mark.parametrize("scope", INVALID, ids=repr)
def test_invalid_scopes_are_rejected(scope: str) -> None:
    assert scope_error(scope) is not None


GRANTS = [
    # (granted, permission, granted?)
    ("inventory:read", "inventory:read", True),
    ("inventory:read", "inventory:write", False),
    ("inventory:read", "inventory", False),
    ("inventory", "inventory:read", False),
    ("inventory:*", "inventory:read", True),
    ("inventory:*", "inventory:write", True),
    ("inventory:*", "inventory:read:own", False),  # a wildcard never crosses a segment boundary
    ("inventory:*", "inventory", False),
    ("inventory:*", "billing:read", False),
    ("inventory:*", "inventoryx:read", False),
    ("inventory:read:*", "inventory:read:own", True),
    ("inventory:read:*", "inventory:write:own", False),
    ("*", "inventory:read", True),
    ("*", "inventory:read:own", True),
    ("*", "*", True),
    ("*", "inventory:*", True),
    ("inventory:read", "Inventory:read", False),  # case-sensitive
    ("inventory:read", "inventory:READ", False),
    ("Inventory:read", "inventory:read", False),
    # A requested permission containing * is satisfied only by the grant *.
    ("inventory:*", "inventory:*", False),
    ("inventory:read", "inventory:*", False),
    ("inventory:*", "*", False),
    ("inventory:read", "*", False),
    ("a:b:*", "a:b:*", False),
]


@pytest.mark.parametrize(("granted", "permission", "expected"), GRANTS)
def test_grants(granted: str, permission: str, expected: bool) -> None:
    assert grants(granted, permission) is expected


COVERS = [
    # (held, handed out, may hand out?)
    ("inventory:*", "inventory:*", True),
    ("inventory:*", "inventory:read", True),
    ("inventory:*", "inventory:read:own", False),
    ("inventory:*", "*", False),
    ("inventory:read", "inventory:*", False),
    ("inventory:read", "inventory:read", True),
    ("inventory:read:*", "inventory:*", False),
    ("*", "*", True),
    ("*", "anything:at:all", True),
    ("admin:apikeys", "admin:*", False),
    ("admin:apikeys", "Admin:apikeys", False),
]


@pytest.mark.parametrize(("held", "scope", "expected"), COVERS)
def test_covers(held: str, scope: str, expected: bool) -> None:
    assert covers(held, scope) is expected


def test_missing_and_uncovered_keep_order() -> None:
    held = ["inventory:*", "billing:read"]
    assert missing(held, ["billing:write", "inventory:read", "x", "inventory:a:b"]) == [
        "billing:write",
        "x",
        "inventory:a:b",
    ]
    assert missing(held, []) == []
    assert missing([], ["a"]) == ["a"]
    assert uncovered(held, ["inventory:*", "inventory:write", "*", "billing:*"]) == ["*", "billing:*"]
    assert uncovered(["*"], ["*", "a:*"]) == []


@pytest.mark.parametrize(
    ("scopes", "tier"),
    [
        ([], "standard"),
        (["inventory:read"], "standard"),
        (["rate:standard"], "standard"),
        (["rate:premium"], "premium"),
        (["rate:enterprise", "inventory:read"], "enterprise"),
        (["rate:premium", "rate:standard"], "premium"),
        (["rate:standard", "rate:enterprise", "rate:premium"], "enterprise"),
        (["*"], "standard"),
        (["ratelimit:premium"], "standard"),
    ],
)
def test_rate_tier_is_the_highest_rate_scope(scopes: list[str], tier: str) -> None:
    assert rate_tier(scopes) == tier


# --- Properties ----------------------------------------------------------------------------------

SEGMENT_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_.-"
segments = st.text(alphabet=SEGMENT_CHARS, min_size=1, max_size=12)
valid_scopes = (
    st.lists(segments, min_size=1, max_size=5)
    .map(":".join)
    .filter(lambda s: len(s) <= MAX_SCOPE_LENGTH - 2 and s.split(":")[0] != "rate")
)

# A small vocabulary, so that scopes often overlap and the implications below get exercised.
small_segment = st.sampled_from(["a", "b", "c"])
small_exact = st.lists(small_segment, min_size=1, max_size=3).map(":".join)
small_scope = st.one_of(
    st.just("*"),
    small_exact,
    st.lists(small_segment, min_size=0, max_size=2).map(lambda parts: ":".join([*parts, "*"])),
)


@given(valid_scopes)
def test_random_segment_strings_are_valid_scopes(scope: str) -> None:
    assert scope_error(scope) is None
    assert scope_error(scope + ":*") is None


@given(small_scope, small_scope, small_scope)
def test_no_escalation_whoever_may_hand_out_a_scope_holds_all_it_grants(
    held: str, given_: str, wanted: str
) -> None:
    if covers(held, given_) and grants(given_, wanted):
        assert grants(held, wanted)


@given(small_scope, small_scope, small_scope)
def test_covers_is_transitive(a: str, b: str, c: str) -> None:
    if covers(a, b) and covers(b, c):
        assert covers(a, c)


@given(small_scope)
def test_covers_is_reflexive_and_the_star_covers_everything(scope: str) -> None:
    assert covers(scope, scope)
    assert covers("*", scope)
    assert scope_error(scope) is None


@given(small_scope, small_scope)
def test_a_permission_with_a_wildcard_is_granted_only_by_the_star(held: str, wanted: str) -> None:
    assume("*" in wanted)
    assert grants(held, wanted) is (held == "*")


@given(valid_scopes, segments, segments)
def test_a_wildcard_matches_exactly_one_segment(prefix: str, one: str, two: str) -> None:
    assert grants(f"{prefix}:*", f"{prefix}:{one}")
    assert not grants(f"{prefix}:*", f"{prefix}:{one}:{two}")
    assert not grants(f"{prefix}:*", prefix)


@given(valid_scopes, st.data())
def test_case_variants_are_rejected(scope: str, data: st.DataObject) -> None:
    letters = [i for i, c in enumerate(scope) if c.isalpha()]
    assume(letters)
    i = data.draw(st.sampled_from(letters))
    variant = scope[:i] + scope[i].upper() + scope[i + 1 :]
    assert scope_error(variant) is not None
    assert not grants(scope, variant) and not grants(variant, scope)


non_ascii = st.characters(min_codepoint=0x80, exclude_categories=["Cs"])


@given(valid_scopes, non_ascii, st.data())
def test_unicode_variants_are_rejected(scope: str, char: str, data: st.DataObject) -> None:
    i = data.draw(st.integers(min_value=0, max_value=len(scope)))
    assert scope_error(scope[:i] + char + scope[i:]) is not None
    replace_at = data.draw(st.integers(min_value=0, max_value=len(scope) - 1))
    assert scope_error(scope[:replace_at] + char + scope[replace_at + 1 :]) is not None


@given(valid_scopes, st.data())
def test_empty_and_trailing_segments_are_rejected(scope: str, data: st.DataObject) -> None:
    assert scope_error(scope + ":") is not None
    assert scope_error(":" + scope) is not None
    assert scope_error(scope + ":*:") is not None
    colons = [i for i, c in enumerate(scope) if c == ":"]
    if colons:
        i = data.draw(st.sampled_from(colons))
        assert scope_error(scope[:i] + ":" + scope[i:]) is not None


@given(valid_scopes, segments)
def test_a_wildcard_anywhere_but_the_whole_last_segment_is_rejected(scope: str, extra: str) -> None:
    assert scope_error(f"*:{scope}") is not None
    assert scope_error(f"{scope}:*:{extra}") is not None
    assert scope_error(f"{scope}*") is not None
    assert scope_error(f"{scope}:*{extra}") is not None
