"""Pinning a worker process to one core: ``identity serve --pin-workers``.

Each grpcio asyncio server runs its event loop on one thread and polls its completion queue on
another. Left to roam, one worker spreads over more than a core and N workers crowd each other
and the scheduler bounces their threads between cores; pinned, worker ``i`` owns core ``i``
and adding a worker with a core adds about a core's worth of calls.
"""

from __future__ import annotations

import os
from pathlib import Path


def core_for(index: int) -> int:
    """The core worker ``index`` runs on: the index-th of the cores this process may use, wrapping."""
    cores = sorted(os.sched_getaffinity(0))
    return cores[index % len(cores)]


def pin_process(core: int) -> None:
    """Run every thread of this process, and each thread it starts later, on ``core`` only.

    Affinity belongs to a thread and a new thread inherits its creator's, so every thread that
    already exists is pinned, not just the calling one.
    """
    for task in Path("/proc/self/task").iterdir():
        try:
            os.sched_setaffinity(int(task.name), {core})
        except ProcessLookupError:
            continue  # the thread ended meanwhile
