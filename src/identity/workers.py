"""``identity serve --workers N``: N server processes sharing one port.

Threads alone give no parallelism under the GIL, so serving uses processes, as grpcio's
multiprocessing example does: each worker binds the same address with SO_REUSEPORT and the
kernel spreads connections across them. The parent only supervises: it forwards SIGTERM and
SIGINT to every worker and returns once all of them have drained and exited.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import signal
from types import FrameType

from identity.config import Settings
from identity.server import build_server
from identity.store.database import Database

log = logging.getLogger("identity")


def serve_forever(settings: Settings, *, reuse_port: bool) -> None:
    """Run one server until SIGTERM or SIGINT, then drain for the grace period."""
    server, port = build_server(settings, reuse_port=reuse_port)
    server.start()
    # Everything built so far lives as long as the process: spare the collector from scanning it
    # again and again (its full passes over these objects stall requests).
    gc.freeze()
    log.info("serving on %s:%d", settings.listen.rpartition(":")[0], port)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: draining for up to %.0f s", signum, settings.shutdown_grace_seconds)
        server.stop(settings.shutdown_grace_seconds)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.wait()


def _worker(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(process)d %(name)s %(message)s"
    )
    serve_forever(settings, reuse_port=True)


def serve_workers(settings: Settings) -> int:
    """Serve with ``settings.workers`` processes; return non-zero if any worker failed."""
    if settings.workers <= 1:
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
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_worker, args=(settings,), name=f"identity-worker-{i}")
        for i in range(settings.workers)
    ]
    for worker in workers:
        worker.start()

    def forward(signum: int, _frame: FrameType | None) -> None:
        for worker in workers:
            if worker.pid is not None and worker.is_alive():
                worker.terminate()  # SIGTERM: each worker drains on its own

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    log.info("started %d workers on %s", len(workers), settings.listen)
    for worker in workers:
        worker.join()
    return max((worker.exitcode or 0) for worker in workers)
