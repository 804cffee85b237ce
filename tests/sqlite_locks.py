"""Another process holding a SQLite database's locks: how a running server loses its SQLite file.

What was tried against a server in WAL mode with its connections open (SQLite 3.40, as root):

- Moving, deleting or ``chmod 000`` of the file: nothing happens. Pooled connections keep the
  open file (root ignores permissions anyway); writes go on into the moved or deleted file, and
  only connections opened later see the path's new, empty database ("no such table").
- ``PRAGMA locking_mode=EXCLUSIVE`` in another process: it cannot get its lock while the server
  has the database open ("database is locked").
- ``BEGIN IMMEDIATE`` (or ``EXCLUSIVE``, the same in WAL mode) held by another process: only
  writers are locked out. They wait for the busy timeout and fail "database is locked"; readers
  go on, and what they read is the committed truth. :data:`WRITER`.
- The WAL-index locks of the ``-shm`` file held by another process (as a wedged SQLite process
  would hold them): every statement, read or write, fails "locking protocol" (SQLITE_PROTOCOL),
  but only after SQLite's own retries of about 10 s, whatever the busy timeout. Interrupting
  the connection does not shorten that wait. :data:`EVERYTHING`.

Run as a script, this module is the holder: ``python sqlite_locks.py MODE PATH`` takes the
locks, prints ``held``, and keeps them until its standard input closes.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import subprocess
import sys
import time

WRITER = "writer"
EVERYTHING = "everything"
# sqlite3 wal.c: the eight WAL-index locks (write, checkpoint, recover, five read marks) are
# one byte each from offset 120 of the -shm file.
WAL_LOCKS = range(120, 128)
ACQUIRE_SECONDS = 10.0


class SqliteLockHolder:
    """A process that holds ``mode``'s locks on the SQLite file at ``path`` between acquire and release."""

    def __init__(self, path: str, mode: str) -> None:
        self.path = path
        self.mode = mode
        self._process: subprocess.Popen[str] | None = None

    def acquire(self) -> None:
        """Start the holder and return once it holds its locks."""
        process = subprocess.Popen(
            [sys.executable, __file__, self.mode, self.path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._process = process
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line == "held", f"the {self.mode} lock holder failed: {line!r}"

    def release(self) -> None:
        """End the holder; its locks go with it."""
        process, self._process = self._process, None
        if process is None:
            return
        assert process.stdin is not None
        process.stdin.close()
        process.wait(timeout=10)


def _hold_writer(path: str) -> sqlite3.Connection:
    connection = sqlite3.connect(path, timeout=ACQUIRE_SECONDS, isolation_level=None)
    connection.execute("BEGIN IMMEDIATE")
    return connection


def _hold_everything(path: str) -> int:
    shm = os.open(f"{path}-shm", os.O_RDWR)
    deadline = time.monotonic() + ACQUIRE_SECONDS
    for offset in WAL_LOCKS:
        # Readers hold read marks for milliseconds: take each lock in a gap between them.
        while True:
            try:
                fcntl.lockf(shm, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset, os.SEEK_SET)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.001)
    return shm


def main(mode: str, path: str) -> None:
    """Hold ``mode``'s locks on ``path`` until standard input closes."""
    held = _hold_writer(path) if mode == WRITER else _hold_everything(path)
    print("held", flush=True)
    sys.stdin.read()
    del held  # referenced until here: a collected connection would let its lock go early


if __name__ == "__main__":
    main(*sys.argv[1:3])
