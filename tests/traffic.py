"""Traffic for fault tests: loops of calls on threads, every call kept with its times and outcome.

An outcome is a short string: ``OK``, ``DENIED <REASON>`` for a Check that said no, or
``<CODE> <REASON>`` for a failed RPC (with a note when its ErrorInfo is missing or malformed), so
assertions compare plain strings and failure messages show exactly what happened.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import grpc
from grpc_status import rpc_status

from tests.helpers import details_of

OK = "OK"
UNAVAILABLE = "UNAVAILABLE UNAVAILABLE"


def error_outcome(error: grpc.RpcError) -> str:
    """``CODE REASON`` of a failed call, marked when it lacks exactly one identity ErrorInfo."""
    if rpc_status.from_call(error) is None:
        return f"{error.code().name} (no ErrorInfo: {error.details()})"
    details = details_of(error)
    well_formed = details.domain == "identity" and details.error_infos == 1
    return f"{details.code.name} {details.reason}" + ("" if well_formed else " (malformed ErrorInfo)")


def attempt(step: Callable[[], str]) -> str:
    """Run one call: the outcome it reports, or its error's (any exception is an outcome too)."""
    try:
        return step()
    except grpc.RpcError as error:
        return error_outcome(error)
    except Exception as error:
        return f"EXCEPTION {error!r}"


@dataclass(frozen=True)
class Call:
    """One call: its kind, when it started and ended (``time.monotonic``), and its outcome."""

    kind: str
    started: float
    ended: float
    outcome: str

    @property
    def seconds(self) -> float:
        """How long it took."""
        return self.ended - self.started


class Traffic:
    """Loops of calls, one thread per kind, each call followed by a pause, until :meth:`stop`."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def add(self, kind: str, step: Callable[[], str], pause: float) -> None:
        """Start calling ``step`` in a loop as ``kind``."""
        self._start(kind, self._loop, step, pause)

    def once(self, kind: str, step: Callable[[], str]) -> None:
        """Call ``step`` once, as ``kind``, on a thread of its own."""
        self._start(kind, self._call, step)

    def stop(self) -> None:
        """Stop every loop after its current call and wait for them."""
        self._stopping.set()
        for thread in self._threads:
            thread.join()

    def of(self, kinds: Iterable[str]) -> list[Call]:
        """The calls of ``kinds``, in the order they ended."""
        wanted = set(kinds)
        return [call for call in self.calls if call.kind in wanted]

    def _start(self, kind: str, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=(kind, *args), name=f"traffic-{kind}")
        self._threads.append(thread)
        thread.start()

    def _loop(self, kind: str, step: Callable[[], str], pause: float) -> None:
        while not self._stopping.is_set():
            self._call(kind, step)
            self._stopping.wait(pause)

    def _call(self, kind: str, step: Callable[[], str]) -> None:
        started = time.monotonic()
        outcome = attempt(step)
        self.calls.append(Call(kind, started, time.monotonic(), outcome))
