"""``identity serve --workers N``: N server processes sharing one port.

Threads alone give no parallelism under the GIL, so serving uses processes, as grpcio's
multiprocessing example does: each worker binds the same address with SO_REUSEPORT and the
kernel spreads connections across them. The parent supervises: it forwards SIGTERM and SIGINT
to every worker and returns once all of them have drained and exited. It also serves the
workers' metrics, gathered from each over a pipe at every scrape (see :mod:`identity.metrics.gather`).
With ``--pin-workers`` each worker runs on a core of its own (see :mod:`identity.affinity`).
"""

from __future__ import annotations

import faulthandler
import gc
import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from types import FrameType

from identity.affinity import core_for, pin_process
from identity.arenas import limit_malloc_arenas
from identity.config import Settings
from identity.logs import configure_logging
from identity.metrics.exposition import WorkerReport, serve_metrics
from identity.metrics.gather import WorkerScrapes, answer_scrapes
from identity.server import build_server
from identity.store.database import Database
from identity.tls import server_credentials

log = logging.getLogger("identity")


def serve_forever(settings: Settings, *, reuse_port: bool, parent: Connection | None = None) -> None:
    """Run one server until SIGTERM or SIGINT, then drain for the grace period.

    A worker answers its ``parent``'s requests for metrics; a server on its own serves them.
    """
    limit_malloc_arenas()  # before the server starts its threads
    # A crash in native code (grpcio, a database driver) leaves every thread's Python stack on
    # stderr, beside the log, to say where it happened.
    faulthandler.enable()
    server, port = build_server(settings, reuse_port=reuse_port)
    stop_metrics: Callable[[], None] | None = None
    if parent is not None:
        # A supervisor that dies, even by SIGKILL, closes its end of the pipe: drain and exit
        # then, rather than serve on as an orphan that nothing will stop.
        answer_scrapes(parent, server.telemetry.snapshot, lambda: os.kill(os.getpid(), signal.SIGTERM))
    elif settings.metrics_listen:
        telemetry = server.telemetry
        stop_metrics = serve_metrics(
            settings.metrics_listen, lambda: [WorkerReport(0, telemetry.snapshot(), current=True)]
        )
    server.start()
    # Everything built so far lives as long as the process: spare the collector from scanning it
    # again and again (its full passes over these objects stall requests).
    gc.freeze()
    log.info("serving on %s:%d", settings.listen.rpartition(":")[0], port)

    draining = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if draining.is_set():
            return  # one drain: a second signal (SIGINT after SIGTERM, say) must not restart it
        draining.set()
        log.info("signal %d: draining for up to %.0f s", signum, settings.shutdown_grace_seconds)
        server.stop(settings.shutdown_grace_seconds)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.wait()
    if stop_metrics is not None:
        stop_metrics()


def _worker(settings: Settings, index: int, parent: Connection) -> None:
    if settings.pin_workers:
        pin_process(core_for(index))  # first, so that every thread the server starts inherits it
    configure_logging(settings.log_level, settings.log_format)
    serve_forever(settings, reuse_port=True, parent=parent)


def serve_workers(settings: Settings) -> int:
    """Serve with ``settings.workers`` processes; return non-zero if any worker failed."""
    if settings.workers <= 1:
        if settings.pin_workers:
            pin_process(core_for(0))
        serve_forever(settings, reuse_port=False)
        return 0
    if settings.listen.endswith(":0"):
        raise SystemExit(
            "several workers need a fixed port to share; --listen HOST:0 works with --workers 1 only"
        )
    database = Database(settings.database_url)
    if database.is_sqlite:
        database.migrate()  # once, before the workers start, so they never race to migrate
    database.dispose()
    server_credentials(settings)  # a bad TLS file stops the start here, not in every worker
    context = multiprocessing.get_context("spawn")
    pipes = [context.Pipe() for _ in range(settings.workers)]
    stop_metrics = None
    if settings.metrics_listen:  # before any worker starts: a port in use stops the start
        stop_metrics = serve_metrics(
            settings.metrics_listen, WorkerScrapes([mine for mine, _ in pipes]).gather
        )
    workers = [
        context.Process(target=_worker, args=(settings, i, theirs), name=f"identity-worker-{i}")
        for i, (_, theirs) in enumerate(pipes)
    ]
    for worker in workers:
        worker.start()
    for _, theirs in pipes:
        theirs.close()  # the worker holds its own end now

    def forward(signum: int, _frame: FrameType | None) -> None:
        for worker in workers:
            if worker.pid is not None and worker.is_alive():
                worker.terminate()  # SIGTERM: each worker drains on its own

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    log.info("started %d workers on %s", len(workers), settings.listen)
    for worker in workers:
        worker.join()
    if stop_metrics is not None:
        stop_metrics()
    return max((worker.exitcode or 0) for worker in workers)
