"""Opaque, time-ordered ids with a type prefix (``key_…``, ``org_…``, ``evt_…``)."""

from __future__ import annotations

import secrets
import time

_BASE32 = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford: no i, l, o, u


def new_id(prefix: str) -> str:
    """A new id: 48 bits of milliseconds then 80 random bits, so ids sort by creation time."""
    value = (time.time_ns() // 1_000_000) << 80 | secrets.randbits(80)
    chars = []
    for _ in range(26):
        value, digit = divmod(value, 32)
        chars.append(_BASE32[digit])
    return f"{prefix}_{''.join(reversed(chars))}"
