"""Reference figures measured beside the server: the cores this process may use, argon2id's own rate."""

from __future__ import annotations

import multiprocessing
import os
import time
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path

from identity.crypto.hashing import Argon2Profile, SecretHasher

READY_SECONDS = 60.0
AUTOGROUP_SWITCH = Path("/proc/sys/kernel/sched_autogroup_enabled")


def usable_cores() -> int:
    """CPUs this process may run on."""
    return len(os.sched_getaffinity(0))


def autogroups_enabled() -> bool:
    """Whether the kernel groups processes by session when it shares out the CPUs.

    PostgreSQL starts every backend in a session of its own; with autogroups on, such a backend
    has been seen on this machine to wait seconds for a CPU while the bench keeps every core busy
    (bench/RESULTS.md).
    """
    try:
        return AUTOGROUP_SWITCH.read_text().strip() == "1"
    except OSError:
        return False


def _verify_for(seconds: float, start: Barrier, rates: Queue[float]) -> None:
    hasher = SecretHasher(Argon2Profile())
    encoded = hasher.hash("a secret")
    start.wait(READY_SECONDS)  # hashed once and ready: spawning and imports stay out of the count
    count = 0
    started = time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        hasher.verify(encoded, "a secret")
        count += 1
    rates.put(count / elapsed)


def argon2_verifies_per_second(processes: int = 1, seconds: float = 1.0) -> float:
    """argon2id verifications a second with the production profile, by ``processes`` processes at once.

    One process per core gives argon2id's own rate on those cores when it has them to itself:
    run at the same moment, the processes share the memory bandwidth and caches as a server's
    argon2 threads do, and the machine's speed of that minute.
    """
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(processes + 1)
    rates: Queue[float] = context.Queue()
    workers = [context.Process(target=_verify_for, args=(seconds, start, rates)) for _ in range(processes)]
    for worker in workers:
        worker.start()
    try:
        start.wait(READY_SECONDS)
        return sum(rates.get(timeout=READY_SECONDS + seconds) for _ in workers)
    finally:
        for worker in workers:
            worker.join()
