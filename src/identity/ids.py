"""Opaque, time-ordered ids with a type prefix (``key_…``, ``org_…``, ``evt_…``)."""

from __future__ import annotations

import secrets
import threading
import time

_BASE32 = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford: no i, l, o, u
_lock = threading.Lock()
_last = 0


def new_id(prefix: str) -> str:
    """A new id: 48 bits of milliseconds then 80 random bits, so ids sort by creation time.

    Within one process ids are strictly increasing (as monotonic ULIDs): an id made in the same
    millisecond as the previous one is that one plus 1, so order holds inside a millisecond too.
    """
    global _last
    value = (time.time_ns() // 1_000_000) << 80 | secrets.randbits(80)
    with _lock:
        if value <= _last:
            value = _last + 1
        _last = value
    chars = []
    for _ in range(26):
        value, digit = divmod(value, 32)
        chars.append(_BASE32[digit])
    return f"{prefix}_{''.join(reversed(chars))}"
