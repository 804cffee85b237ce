"""Drive gRPC load with h2load (nghttp2's HTTP/2 load generator) and read back what it saw.

h2load speaks HTTP/2 cleartext and posts one fixed body, which is all a unary gRPC call is: a
POST to ``/<service>/<method>`` with ``content-type: application/grpc`` and ``te: trailers``
whose body is one gRPC frame (see :func:`bench.rpc.grpc_frame`). It runs as its own process,
so the load generator never shares an interpreter (or a GIL) with the server.

How errors are counted. A failed gRPC call is still an HTTP 200 response: its status travels
in a ``grpc-status`` trailer, which h2load does not look at, and it carries no DATA. So h2load
alone cannot tell a refusal from an answer. What it does report is the total of DATA bytes
received. Every case sends one fixed request whose right answer is a fixed-size message (the
same credential gets the same decision; tokens minted from one key have one length), and
:func:`bench.rpc.probe` checks that answer and measures its frame size before the run. Then

    ok = data bytes // answer frame size        errors = requests done - ok

Refusals (no DATA), failed streams and timeouts all count as errors. If the DATA total is not a
whole number of right answers, some answer had another size; the run then reports at least one
error, and the count is a lower bound.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.rpc import BenchError, grpc_frame
from bench.stats import Run, summarize

INSTALL_HINT = (
    "install it with `apt-get install nghttp2-client` (Debian, Ubuntu) or your system's nghttp2 package"
)
_FINISHED = re.compile(r"^finished in ([\d.]+)(us|ms|s),", re.MULTILINE)
_REQUESTS = re.compile(r"^requests: (\d+) total, (\d+) started, (\d+) done", re.MULTILINE)
_DATA = re.compile(r"^traffic: .*\((\d+)\) data$", re.MULTILINE)
_UNIT_SECONDS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def find_h2load() -> str:
    """The path of the h2load binary; exits with a clear message when it is not installed."""
    path = shutil.which("h2load")
    if path is None:
        raise SystemExit(f"bench: h2load was not found on PATH; {INSTALL_HINT}")
    return path


@dataclass(frozen=True)
class Load:
    """What one h2load process sends, and how hard.

    ``streams`` is the number of calls in flight per connection; ``rps_per_connection`` (if set)
    paces each connection at that rate instead of sending as fast as answers come back.
    """

    port: int
    method: str
    request: bytes
    connections: int
    streams: int = 1
    rps_per_connection: float | None = None


@dataclass(frozen=True)
class Totals:
    """What h2load reported for one run."""

    seconds: float
    started: int
    done: int
    data_bytes: int
    latencies_s: tuple[float, ...]


def parse_summary(text: str) -> tuple[float, int, int, int]:
    """``(seconds, started, done, data bytes)`` from h2load's printed summary."""
    finished, requests, data = _FINISHED.search(text), _REQUESTS.search(text), _DATA.search(text)
    if finished is None or requests is None or data is None:
        raise BenchError(f"could not read h2load's summary:\n{text[-2000:]}")
    seconds = float(finished.group(1)) * _UNIT_SECONDS[finished.group(2)]
    return seconds, int(requests.group(2)), int(requests.group(3)), int(data.group(1))


def read_log(path: Path) -> tuple[float, ...]:
    """Per-call latencies (seconds) from an h2load ``--log-file``, leaving out failed streams.

    Each line is ``start (µs since epoch) TAB HTTP status (-1: stream failed) TAB µs to the end
    of the response``.
    """
    latencies = []
    for line in path.read_text().splitlines():
        fields = line.split("\t")
        if len(fields) >= 3 and fields[1] != "-1":
            latencies.append(int(fields[2]) / 1e6)
    return tuple(latencies)


def judge(totals: Totals, answer_frame_size: int) -> Run:
    """The run as the table shows it; errors are counted from DATA bytes (see the module docstring)."""
    ok = min(totals.done, totals.data_bytes // answer_frame_size)
    errors = totals.done - ok
    if totals.data_bytes % answer_frame_size:
        errors = max(errors, 1)
    run = summarize(totals.latencies_s, totals.seconds, errors)
    # Latencies come from the log, calls and rps from the summary (failed streams are not logged).
    rps = totals.done / totals.seconds if totals.seconds > 0 else 0.0
    return Run(rps=rps, p50_ms=run.p50_ms, p99_ms=run.p99_ms, errors=errors, calls=totals.done)


def _duration(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


class H2Load:
    """Runs h2load processes, each with its own body and log files in a scratch directory."""

    def __init__(self, binary: str) -> None:
        """Use the h2load at ``binary`` (see :func:`find_h2load`)."""
        self._binary = binary

    def run(self, load: Load, seconds: float) -> Totals:
        """Send ``load`` for ``seconds`` and wait for the result."""
        with self.background(load, seconds) as result:
            return result()

    @contextmanager
    def background(self, load: Load, seconds: float) -> Iterator[_Waiter]:
        """Start h2load and yield a function that waits for it and returns its totals.

        The process is killed if the block is left before it finished.
        """
        with tempfile.TemporaryDirectory(prefix="bench-h2load-") as scratch:
            directory = Path(scratch)
            body, log, output = directory / "body", directory / "latencies.tsv", directory / "output"
            body.write_bytes(grpc_frame(load.request))
            command = [
                self._binary,
                f"--data={body}",
                "--header=content-type: application/grpc",
                "--header=te: trailers",
                f"--clients={load.connections}",
                "--threads=1",
                f"--max-concurrent-streams={load.streams}",
                f"--duration={_duration(seconds)}",
                f"--log-file={log}",
            ]
            if load.rps_per_connection is not None:
                command.append(f"--rps={load.rps_per_connection:g}")
            command.append(f"http://127.0.0.1:{load.port}{load.method}")
            with output.open("w") as sink:
                process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)  # noqa: S603
                try:
                    yield _Waiter(process, output, log, seconds + 60)
                finally:
                    if process.poll() is None:
                        process.kill()
                        process.wait()


class _Waiter:
    """Waits for one h2load process and reads its totals."""

    def __init__(self, process: subprocess.Popen[bytes], output: Path, log: Path, timeout: float) -> None:
        self._process, self._output, self._log, self._timeout = process, output, log, timeout

    def __call__(self) -> Totals:
        """Wait for h2load to finish; raise :class:`BenchError` if it failed."""
        try:
            code = self._process.wait(self._timeout)
        except subprocess.TimeoutExpired:
            raise BenchError("h2load did not finish in time") from None
        text = self._output.read_text()
        if code != 0:
            raise BenchError(f"h2load exited with status {code}:\n{text[-2000:]}")
        seconds, started, done, data_bytes = parse_summary(text)
        return Totals(seconds, started, done, data_bytes, read_log(self._log))
