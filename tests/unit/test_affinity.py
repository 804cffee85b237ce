"""``--pin-workers``: a worker process runs on one core, every thread of it, old and new."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from identity.affinity import core_for

# Run in a process of its own: pinning the test process would slow every test after it.
PINNED_THREADS = textwrap.dedent(
    """
    import os, threading
    from identity.affinity import pin_process

    started = threading.Event()
    done = threading.Event()
    before = threading.Thread(target=lambda: (started.set(), done.wait()))
    before.start()
    started.wait()
    core = max(os.sched_getaffinity(0))
    pin_process(core)
    after = threading.Thread(target=done.wait)
    after.start()
    seen = [os.sched_getaffinity(thread.native_id) for thread in (before, after)]
    seen.append(os.sched_getaffinity(0))
    done.set()
    print(core, *(sorted(cores) for cores in seen))
    """
)


def test_workers_take_the_usable_cores_in_order_and_wrap() -> None:
    cores = sorted(os.sched_getaffinity(0))
    assert [core_for(index) for index in range(2 * len(cores))] == cores + cores


def test_pinning_holds_every_thread_started_before_and_after() -> None:
    printed = subprocess.run(
        [sys.executable, "-c", PINNED_THREADS], capture_output=True, text=True, check=True
    ).stdout.split(maxsplit=1)
    core = int(printed[0])
    assert printed[1].strip() == " ".join([f"[{core}]"] * 3)
