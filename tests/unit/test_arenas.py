"""A server process keeps to two malloc arenas however many threads allocate."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

# In a process of its own, as a server process calls it: first, before any thread allocates.
# glibc's malloc_info() writes one <heap nr="N"> element per arena.
COUNT_ARENAS = textwrap.dedent(
    """
    import ctypes, sys, threading
    from identity.arenas import limit_malloc_arenas

    print(limit_malloc_arenas())
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.fopen.restype = ctypes.c_void_p
    held, ready, done = [], threading.Barrier(7), threading.Event()

    def allocate():
        held.append(libc.malloc(64 * 1024))
        ready.wait()
        done.wait()

    threads = [threading.Thread(target=allocate) for _ in range(6)]
    for thread in threads:
        thread.start()
    ready.wait()
    report = libc.fopen(sys.argv[1].encode(), b"w")
    libc.malloc_info(0, ctypes.c_void_p(report))
    libc.fclose(ctypes.c_void_p(report))
    done.set()
    """
)


def arenas_used(tmp_path: Path, env: dict[str, str]) -> tuple[str, int]:
    report = tmp_path / "malloc_info.xml"
    printed = subprocess.run(
        [sys.executable, "-c", COUNT_ARENAS, str(report)], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    return printed, report.read_text().count("<heap nr=")


def test_six_threads_share_two_arenas(tmp_path: Path) -> None:
    env = {name: value for name, value in os.environ.items() if name != "MALLOC_ARENA_MAX"}
    assert arenas_used(tmp_path, env) == ("True", 2)


def test_an_operators_malloc_arena_max_wins(tmp_path: Path) -> None:
    env = {**os.environ, "MALLOC_ARENA_MAX": "4"}
    assert arenas_used(tmp_path, env) == ("False", 4)
