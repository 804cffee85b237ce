"""Opaque page tokens (AIP-158): where the last page stopped, bound to the query's filters."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from identity.domain.errors import invalid

T = TypeVar("T")
MAX_TOKEN_LENGTH = 512


def _fingerprint(filters: Sequence[object]) -> str:
    return hashlib.sha256(repr(tuple(filters)).encode()).hexdigest()[:16]


def encode_token(mark: Any, filters: Sequence[object]) -> str:
    """A token resuming after ``mark`` (JSON-ready), valid only with the same ``filters``."""
    raw = json.dumps({"m": mark, "f": _fingerprint(filters)}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _printable(mark: object) -> bool:
    # Marks are ids and ISO times: printable ASCII. Anything else would reach the query, where
    # PostgreSQL refuses a NUL as a database error (UNAVAILABLE) rather than as bad input.
    if isinstance(mark, str):
        return mark.isascii() and mark.isprintable()
    if isinstance(mark, list):
        return all(_printable(part) for part in mark)
    return True


def decode_token(token: str, filters: Sequence[object], shape: type[T]) -> T | None:
    """The mark inside ``token`` (of type ``shape``); None for the first page.

    A garbled token, or one from a list with other filters, is INVALID_ARGUMENT.
    """
    if not token:
        return None
    try:
        if len(token) > MAX_TOKEN_LENGTH:
            raise ValueError
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if not isinstance(data, dict) or not isinstance(data.get("m"), shape) or not _printable(data["m"]):
            raise ValueError
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise invalid("page_token", "is not a token returned by this list") from None
    if data.get("f") != _fingerprint(filters):
        raise invalid("page_token", "belongs to a list with other filters")
    mark: T = data["m"]
    return mark


def page(items: list[T], page_size: int) -> tuple[list[T], bool]:
    """Split a query result fetched with ``page_size + 1`` rows into the page and whether more follow."""
    return items[:page_size], len(items) > page_size


TimeMark = tuple[datetime, str]


def encode_time_mark(time: datetime, ident: str, filters: Sequence[object]) -> str:
    """A token resuming after the row at ``(time, ident)`` of a list ordered by a time, then id."""
    return encode_token([time.isoformat(), ident], filters)


def decode_time_mark(token: str, filters: Sequence[object]) -> TimeMark | None:
    """The ``(time, id)`` mark inside a token from :func:`encode_time_mark`; None for the first page."""
    mark = decode_token(token, filters, list)
    if mark is None:
        return None
    try:
        time, ident = datetime.fromisoformat(mark[0]), mark[1]
        # Ours carry an aware time and an id; anything else would reach the query and fail there
        # (a naive or out-of-range time cannot be converted to the stored UTC).
        if time.tzinfo is None or not isinstance(ident, str):
            raise ValueError
        return time.astimezone(UTC), ident
    except (ValueError, TypeError, IndexError, OverflowError):
        raise invalid("page_token", "is not a token returned by this list") from None
