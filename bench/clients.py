"""Python load clients, for calls h2load cannot make: a different request every call.

h2load repeats one body, so a case whose every call presents a never-seen key (a cold exchange,
filling a cache) runs here instead: several client processes of several threads, each thread
with its own connection, each call taking the next request of the process's share. One
connection per thread, as h2load's, lets SO_REUSEPORT spread the calls over every worker: with
one per process, two processes landed on the same worker about half the time.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import multiprocessing
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event

import grpc

from bench.rpc import TIMEOUT_SECONDS, Answer, BenchError, is_expected
from bench.stats import Run, summarize

READY_SECONDS = 60.0


@dataclass(frozen=True)
class ClientRun:
    """What the clients saw: every call's latency (seconds), wrong answers, wall time.

    ``exhausted`` says the requests ran out before the time did.
    """

    latencies_s: tuple[float, ...]
    errors: int
    seconds: float
    exhausted: bool

    def run(self) -> Run:
        """As a table row sees it."""
        return summarize(self.latencies_s, self.seconds, self.errors)


def _call_all(
    channels: Sequence[grpc.Channel],
    method: str,
    answer: Answer,
    requests: Iterator[bytes],
    seconds: float,
) -> ClientRun:
    """Call from one thread per channel until the requests or the time run out."""
    threads = len(channels)
    lock = threading.Lock()
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors = [0] * threads
    exhausted = threading.Event()
    started = time.perf_counter()
    deadline = started + seconds

    def worker(index: int) -> None:
        call = channels[index].unary_unary(method)
        mine = latencies[index]
        while time.perf_counter() < deadline:
            with lock:
                request = next(requests, None)
            if request is None:
                exhausted.set()
                return
            begun = time.perf_counter()
            try:
                right = is_expected(answer, call(request, timeout=TIMEOUT_SECONDS))
            except grpc.RpcError:
                right = False
            mine.append(time.perf_counter() - begun)
            errors[index] += not right

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    elapsed = time.perf_counter() - started
    return ClientRun(
        tuple(itertools.chain.from_iterable(latencies)), sum(errors), elapsed, exhausted.is_set()
    )


def _client_process(
    address: str,
    method: str,
    answer: Answer,
    requests: list[bytes],
    threads: int,
    seconds: float,
    start: Event,
    results: Connection,
) -> None:
    with contextlib.ExitStack() as stack:
        channels = [stack.enter_context(_connect(address)) for _ in range(threads)]
        results.send("ready")
        start.wait()
        results.send(_call_all(channels, method, answer, iter(requests), seconds))


def _connect(address: str) -> grpc.Channel:
    """A ready channel with a connection of its own.

    grpcio shares one connection between a process's channels to the same address unless told
    otherwise.
    """
    channel = grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
    grpc.channel_ready_future(channel).result(timeout=READY_SECONDS)
    return channel


def _receive(connection: Connection) -> object:
    try:
        return connection.recv()
    except EOFError:
        raise BenchError("a client process died; see its traceback above") from None


def drive(
    address: str,
    method: str,
    answer: Answer,
    requests: Sequence[bytes],
    *,
    processes: int,
    threads: int,
    seconds: float = math.inf,
) -> ClientRun:
    """Send each request once, from ``processes`` processes of ``threads`` threads, for at most ``seconds``.

    The processes connect first and start together; the wall time is the longest any of them ran.
    """
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    share = math.ceil(len(requests) / processes)
    running = []
    try:
        for number in range(processes):
            receive, send = context.Pipe(duplex=False)
            mine = list(requests[number * share : (number + 1) * share])
            process = context.Process(
                target=_client_process,
                args=(address, method, answer, mine, threads, seconds, start, send),
                daemon=True,
            )
            process.start()
            send.close()  # the child holds the only write end: its death reads as EOF here
            running.append((process, receive))
        for _, receive in running:
            if not receive.poll(READY_SECONDS) or _receive(receive) != "ready":
                raise BenchError(f"a client process did not connect to {address}")
        start.set()
        timeout = seconds + 10 * TIMEOUT_SECONDS if math.isfinite(seconds) else None
        runs = []
        for _, receive in running:
            if not receive.poll(timeout):
                raise BenchError("a client process did not finish in time")
            result = _receive(receive)
            if not isinstance(result, ClientRun):
                raise BenchError(f"a client process sent {result!r}")
            runs.append(result)
    finally:
        for process, _ in running:
            process.join(10)
            if process.is_alive():
                process.kill()
    return ClientRun(
        tuple(itertools.chain.from_iterable(r.latencies_s for r in runs)),
        sum(r.errors for r in runs),
        max(r.seconds for r in runs),
        any(r.exhausted for r in runs),
    )


def sequential(
    address: str, method: str, answer: Answer, requests: Iterable[bytes], seconds: float = math.inf
) -> ClientRun:
    """One call at a time from this process, each request once, for at most ``seconds``."""
    with _connect(address) as channel:
        return _call_all([channel], method, answer, iter(requests), seconds)
