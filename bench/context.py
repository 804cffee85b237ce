"""What every case shares: the options, h2load, servers on a scratch directory, and the results."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bench.h2load import H2Load
from bench.options import Options
from bench.report import Table
from bench.rpc import BenchError
from bench.servers import EmptyServer, IdentityProcess, Workers, empty_server, identity_server, new_kek
from bench.stats import Run


@dataclass(frozen=True)
class Row:
    """One throughput row: a case at a number of workers, and the baseline at that number."""

    case: str
    workers: Workers
    run: Run
    baseline: Run | None


@dataclass
class Results:
    """What the cases measured so far."""

    rows: list[Row] = field(default_factory=list)
    baselines: dict[Workers, Run] = field(default_factory=dict)
    check_key: dict[Workers, Row] = field(default_factory=dict)
    tables: list[tuple[str, Table]] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)


class Context:
    """The options, the h2load driver, a scratch directory for server logs, and the results."""

    def __init__(self, options: Options, h2load: H2Load | None, scratch: Path) -> None:
        """Run with ``options``; keep server logs under ``scratch``."""
        self.options = options
        self._h2load = h2load
        self.scratch = scratch
        self.kek = new_kek()
        self.results = Results()
        # Empty-handler servers running beside the identity server, by worker count (paired runs).
        self.paired_servers: dict[Workers, EmptyServer] = {}
        self._started = time.monotonic()
        self._servers = 0

    @property
    def h2load(self) -> H2Load:
        """The h2load driver (found on PATH at start-up when a case needs it)."""
        if self._h2load is None:
            raise BenchError("this case needs h2load")
        return self._h2load

    def say(self, message: str) -> None:
        """A progress line on stderr, stamped with the time since the start."""
        print(f"[{time.monotonic() - self._started:6.1f} s] {message}", file=sys.stderr, flush=True)

    @contextmanager
    def paired_baseline(self, workers: Workers) -> Iterator[None]:
        """Keep an empty-handler server with ``workers`` workers up, for cases to pair their runs with."""
        with empty_server(workers) as empty:
            self.paired_servers[workers] = empty
            try:
                yield
            finally:
                del self.paired_servers[workers]

    @contextmanager
    def server(self, database_url: str, workers: Workers) -> Iterator[IdentityProcess]:
        """``identity serve`` with ``workers`` workers on ``database_url``; its log goes to the scratch directory."""
        self._servers += 1
        log = self.scratch / f"identity-{self._servers}-w{workers.count}.log"
        with identity_server(database_url, workers, self.kek, log) as server:
            flags = " --pin-workers" if workers.pinned else ""
            self.say(
                f"identity serve --workers {workers.count}{flags} on {server.address} (pid {server.process.pid})"
            )
            yield server

    def server_logs(self) -> list[Path]:
        """Every identity server log of this run, oldest first."""
        return sorted(self.scratch.glob("identity-*.log"), key=lambda path: path.stat().st_mtime)
