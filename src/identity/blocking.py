"""The event-loop thread must never wait: what would block there raises :class:`WouldBlock` instead.

The server answers warm calls on its asyncio event loop, where a call costs no thread hand-off
(see :mod:`identity.services.loop`). Whether a call is warm is known only by trying it: the
door runs it on the loop, and the first thing that would wait (a database session, argon2 work)
raises :class:`WouldBlock` before it starts; the door then runs the whole call again on a request
thread. So the guard sits where waiting begins, and nothing observable happens before it; what
little is counted before it (cache lookups) is counted with :func:`after_try`, which drops it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class _ThreadState(threading.local):
    forbidden = False  # set for good by forbid_blocking
    held: list[tuple[Callable[..., None], tuple[Any, ...]]] | None = None  # during an attempt


_thread = _ThreadState()


class WouldBlock(BaseException):
    """Raised, in place of waiting, on a thread that must not wait.

    A ``BaseException``, as ``GeneratorExit`` is, so that no ``except Exception`` on the way
    mistakes the retry on another thread for a failure of the call.
    """


def forbid_blocking() -> None:
    """From now on, this thread raises :class:`WouldBlock` wherever it would wait (see :func:`may_block`)."""
    _thread.forbidden = True


def may_block() -> None:
    """Mark a place that waits for I/O or for other threads: raise :class:`WouldBlock` on a thread that must not."""
    if _thread.forbidden:
        raise WouldBlock


def attempt(work: Callable[..., T], *args: Any) -> T:
    """Run ``work(*args)`` on this thread, with :func:`after_try` effects held until it ends.

    Ended by returning or by raising, the effects take place; by :class:`WouldBlock` they are
    dropped, since the work will run again from the start elsewhere.
    """
    held: list[tuple[Callable[..., None], tuple[Any, ...]]] = []
    _thread.held = held
    try:
        return work(*args)
    except WouldBlock:
        held.clear()
        raise
    finally:
        _thread.held = None
        for effect, effect_args in held:
            effect(*effect_args)


def after_try(effect: Callable[..., None], *args: Any) -> None:
    """Call ``effect(*args)`` now, or within an :func:`attempt` once it ended (never if it would block)."""
    held = _thread.held
    if held is None:
        effect(*args)
    else:
        held.append((effect, args))
