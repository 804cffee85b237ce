"""Snapshots of every worker, fetched by the parent process over pipes when it is scraped.

``identity serve --workers N`` runs N processes, each counting only its own calls. The parent
serves ``/metrics``: at each scrape it asks every worker, over a pipe of their own, for a
snapshot. Nothing is written anywhere between scrapes, so counting stays free on the request
path (compare prometheus_client's multiprocess mode: a shared lock and a write to a mapped file
per update).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection

from identity.metrics.exposition import WorkerReport
from identity.metrics.snapshot import WorkerSnapshot

# A worker busy serving still answers within milliseconds; one that does not is left out.
ANSWER_SECONDS = 2.0


def answer_scrapes(
    parent: Connection, snapshot: Callable[[], WorkerSnapshot], parent_gone: Callable[[], None]
) -> None:
    """In a worker: answer each request from ``parent`` with a snapshot, on a thread of its own.

    Call ``parent_gone`` once the parent's end of the pipe closes: the parent has exited.
    """

    def answer() -> None:
        while True:
            try:
                asked = parent.recv()
                parent.send((asked, snapshot()))
            except (EOFError, OSError):
                parent_gone()
                return

    threading.Thread(target=answer, name="metrics", daemon=True).start()


class WorkerScrapes:
    """In the parent: gathers a report from every worker, keeping each one's last snapshot."""

    def __init__(self, workers: Sequence[Connection], timeout: float = ANSWER_SECONDS) -> None:
        """Ask each of ``workers`` (the parent's ends of their pipes); wait ``timeout`` seconds at most."""
        self._workers = workers
        self._timeout = timeout
        self._last: list[WorkerSnapshot | None] = [None] * len(workers)
        self._asked = 0
        # One scrape at a time, so that each answer is to the question just asked.
        self._scraping = threading.Lock()

    def gather(self) -> list[WorkerReport]:
        """A report per worker that ever answered; ``current`` for those that answered now."""
        with self._scraping:
            self._asked += 1
            asked = [index for index, worker in enumerate(self._workers) if self._ask(worker)]
            deadline = time.monotonic() + self._timeout
            current = set()
            for index in asked:
                snapshot = self._answer(self._workers[index], deadline)
                if snapshot is not None:
                    self._last[index] = snapshot
                    current.add(index)
            return [
                WorkerReport(index, snapshot, index in current)
                for index, snapshot in enumerate(self._last)
                if snapshot is not None
            ]

    def _ask(self, worker: Connection) -> bool:
        try:
            worker.send(self._asked)
        except OSError:
            return False  # the worker has exited
        return True

    def _answer(self, worker: Connection, deadline: float) -> WorkerSnapshot | None:
        try:
            while worker.poll(max(0.0, deadline - time.monotonic())):
                asked, snapshot = worker.recv()
                if asked == self._asked:  # not a late answer to an earlier scrape
                    return snapshot  # type: ignore[no-any-return]
        except (EOFError, OSError):
            pass  # the worker exited meanwhile
        return None
