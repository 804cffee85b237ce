"""At most two glibc malloc arenas per server process.

glibc gives each new thread an arena of its own, up to eight per core, and an arena keeps what
was freed in it for reuse. A server process has dozens of threads (request threads, the argon2
pool, the event loop, grpcio's), so the same cached keys cost it a different, larger resident
size from run to run: 261 to 297 MiB for 100,000 keys on one worker, against 241 MiB with two
arenas (bench/RESULTS.md). Python code holds the GIL while it allocates, so the threads hardly
ever contend for an arena.
"""

from __future__ import annotations

import ctypes
import os

M_ARENA_MAX = -8  # mallopt's parameter number, from glibc's malloc.h
ARENAS = 2


def limit_malloc_arenas(arenas: int = ARENAS) -> bool:
    """Cap this process's malloc arenas at ``arenas``; call it before starting threads.

    An operator's ``MALLOC_ARENA_MAX`` wins. Returns whether the cap was set: False there, and
    where the C library is not glibc.
    """
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return False
    return bool(mallopt(M_ARENA_MAX, arenas))
