"""Opaque page tokens bound to their filters, and AIP-158 page sizes."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from identity.domain.errors import IdentityError, Reason
from identity.domain.paging import MAX_TOKEN_LENGTH, decode_token, encode_token, page
from identity.domain.validation import validate_page_size

FILTERS: list[object] = ["org_1", "", None]


def assert_invalid(error: pytest.ExceptionInfo[IdentityError], field: str) -> None:
    assert error.value.reason is Reason.INVALID_ARGUMENT
    assert error.value.status == "INVALID_ARGUMENT"
    assert [v.field for v in error.value.violations] == [field]


def test_a_token_round_trips_its_mark() -> None:
    token = encode_token("key_0123", FILTERS)
    assert token and "=" not in token
    assert decode_token(token, FILTERS, str) == "key_0123"
    mark = ["2030-01-01T00:00:00+00:00", "key_9"]
    assert decode_token(encode_token(mark, FILTERS), FILTERS, list) == mark


PRINTABLE = st.characters(min_codepoint=0x20, max_codepoint=0x7E)


@given(
    st.text(PRINTABLE, max_size=20),
    st.lists(st.one_of(st.none(), st.text(max_size=10), st.integers()), max_size=4),
)
def test_any_printable_mark_round_trips_under_its_filters(mark: str, filters: list[object]) -> None:
    assert decode_token(encode_token(mark, filters), filters, str) == mark


@pytest.mark.parametrize("mark", ["key_\x00", "caf\u00e9", ["2030-01-01T00:00:00+00:00", "a\nb"]])
def test_a_mark_the_service_never_writes_is_refused(mark: object) -> None:
    # Marks are ids and ISO times; a NUL would otherwise reach PostgreSQL, which refuses it.
    with pytest.raises(IdentityError) as error:
        decode_token(encode_token(mark, FILTERS), FILTERS, type(mark))
    assert_invalid(error, "page_token")


def test_an_empty_token_is_the_first_page() -> None:
    assert decode_token("", FILTERS, str) is None


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


GARBAGE = [
    "garbage",
    "!!!!",
    "ü",
    "a" * (MAX_TOKEN_LENGTH + 1),
    _b64(b"\xff\xfe\xfd"),
    _b64(b"not json"),
    _b64(json.dumps([1, 2]).encode()),
    _b64(json.dumps("key_1").encode()),
    _b64(json.dumps({"f": "x"}).encode()),
    _b64(json.dumps({"m": 5, "f": "x"}).encode()),
    _b64(json.dumps({"m": None}).encode()),
    _b64(json.dumps({"m": ["key_1"]}).encode()),
]


@pytest.mark.parametrize("token", GARBAGE, ids=lambda t: repr(t[:30]))
def test_a_garbage_token_is_invalid_argument_on_page_token(token: str) -> None:
    with pytest.raises(IdentityError) as error:
        decode_token(token, FILTERS, str)
    assert_invalid(error, "page_token")


def test_a_token_of_the_wrong_shape_is_invalid() -> None:
    token = encode_token("key_1", FILTERS)
    with pytest.raises(IdentityError) as error:
        decode_token(token, FILTERS, list)
    assert_invalid(error, "page_token")


@pytest.mark.parametrize(
    "other",
    [
        ["org_2", "", None],
        ["org_1", "usr_1", None],
        ["org_1", "", "active"],
        ["org_1", None, None],
        ["org_1", ""],
    ],
)
def test_a_token_is_bound_to_its_filters(other: list[object]) -> None:
    token = encode_token("key_1", FILTERS)
    with pytest.raises(IdentityError) as error:
        decode_token(token, other, str)
    assert_invalid(error, "page_token")
    assert decode_token(token, list(FILTERS), str) == "key_1"


def test_a_token_with_a_forged_fingerprint_is_invalid() -> None:
    token = encode_token("key_1", FILTERS)
    data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    data["f"] = "0" * 16
    with pytest.raises(IdentityError) as error:
        decode_token(_b64(json.dumps(data).encode()), FILTERS, str)
    assert_invalid(error, "page_token")


@pytest.mark.parametrize(
    ("asked", "used"), [(0, 50), (1, 1), (50, 50), (999, 999), (1000, 1000), (1001, 1000), (2**31 - 1, 1000)]
)
def test_page_sizes_follow_aip_158(asked: int, used: int) -> None:
    assert validate_page_size(asked) == used


def test_page_size_default_and_maximum_are_adjustable() -> None:
    assert validate_page_size(0, default=10, maximum=20) == 10
    assert validate_page_size(25, default=10, maximum=20) == 20


@pytest.mark.parametrize("asked", [-1, -50, -(2**31)])
def test_a_negative_page_size_is_invalid_argument(asked: int) -> None:
    with pytest.raises(IdentityError) as error:
        validate_page_size(asked)
    assert_invalid(error, "page_size")


def test_page_splits_the_extra_row_off() -> None:
    assert page([1, 2, 3], 2) == ([1, 2], True)
    assert page([1, 2], 2) == ([1, 2], False)
    assert page([1], 2) == ([1], False)
    assert page([], 2) == ([], False)
