"""Opaque, time-ordered ids with a type prefix (``key_…``, ``org_…``, ``evt_…``)."""

from __future__ import annotations

import os
import threading
import time

_BASE32 = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford: no i, l, o, u
# Two digits (10 bits) at a time from a table: a digit at a time costs an exchange several µs.
_DIGIT_PAIRS = [high + low for high in _BASE32 for low in _BASE32]
_PAIR_SHIFTS = range(120, -1, -10)
_RANDOM_BYTES = 10  # 80 bits per id
_BATCH = 400  # ids' worth of randomness drawn from the OS at once
_lock = threading.Lock()
_last = 0
_random = b""


def _forget_random() -> None:
    global _random
    _random = b""  # a forked child must not hand out its parent's ids


os.register_at_fork(after_in_child=_forget_random)


def new_id(prefix: str) -> str:
    """A new id: 48 bits of milliseconds then 80 random bits, so ids sort by creation time.

    Within one process ids are strictly increasing (as monotonic ULIDs): an id made in the same
    millisecond as the previous one is that one plus 1, so order holds inside a millisecond too.
    """
    global _last, _random
    millis = time.time_ns() // 1_000_000
    with _lock:
        # os.urandom releases the GIL, which busy request threads make costly to win back:
        # draw for many ids at once rather than once per id.
        if not _random:
            _random = os.urandom(_RANDOM_BYTES * _BATCH)
        value = millis << 80 | int.from_bytes(_random[:_RANDOM_BYTES], "big")
        _random = _random[_RANDOM_BYTES:]
        if value <= _last:
            value = _last + 1
        _last = value
    return f"{prefix}_{crockford(value)}"


def crockford(value: int) -> str:
    """The 128-bit ``value`` as 26 Crockford base32 digits (130 bits), most significant first."""
    return "".join([_DIGIT_PAIRS[(value >> shift) & 0x3FF] for shift in _PAIR_SHIFTS])
