"""Throughput cases: the empty-handler baseline, warm Check and exchange, cold exchange, a flood, scaling.

Every case sends one kind of call at full speed for ``--seconds``, after one warm-up run, and
keeps the median of ``--repeat`` runs. h2load drives every case whose request never changes;
the cold exchange, whose every call needs a new key, runs from Python client processes.

This machine's speed drifts from minute to minute, so each h2load case is paired with the
baseline: before every run of the case, the empty handler (kept running beside the identity
server, with as many workers) gets a run of the same length, and the case's ratio is to the
median of those paired runs.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import astuple, dataclass

import grpc

from bench.clients import drive
from bench.context import Context, Row
from bench.h2load import Load, Totals, judge
from bench.reference import argon2_verifies_per_second, usable_cores
from bench.report import SERIAL_HEADERS, Table, serial_row
from bench.rpc import (
    CHECK,
    EMPTY,
    EXCHANGE,
    TOKEN_LIFETIME_SECONDS,
    Answer,
    BenchError,
    check_request,
    exchange_request,
    grpc_frame,
    probe,
    probe_refused,
    raw_call,
)
from bench.seed import Admin, wrong_secret
from bench.servers import CACHES, EmptyServer, IdentityProcess, Usage, Workers, empty_server
from bench.stats import Run, median_run
from identity.v1 import token_service_pb2

BASELINE = "empty handler (baseline)"
CHECK_JWT = "Check, warm JWT"
CHECK_KEY = "Check, warm API key"
EXCHANGE_WARM = "ExchangeApiKey, warm key"
EXCHANGE_COLD = "ExchangeApiKey, cold key (argon2)"
CHECK_FLOOD = "Check, warm API key, wrong-secret flood"
FLOOD_CONNECTIONS = 4
FLOOD_LEAD_SECONDS = 1.0  # the flood starts this long before the measured load and ends this long after
COLD_HEADROOM = 1.5  # cold keys created per second of run: argon2id's rate on every core, times this
EMPTY_FRAME_SIZE = len(grpc_frame(b""))
# Scaling compares a worker on one core with two on two: unpinned, one asyncio worker already
# spreads over more than a core (its completion-queue poller runs beside the event loop), so on
# a small machine it would measure what the one worker leaves idle, not what a second one adds.
SCALING = (Workers(1, pinned=True), Workers(2, pinned=True))


@dataclass(frozen=True)
class Tenant:
    """The benchmark's organization on the main database: a warm key, its JWT, a flood victim."""

    org_id: str
    key: str
    token: str
    victim_key: str


def create_tenant(admin: Admin, address: str) -> Tenant:
    """An organization with two keys (scope ``inventory:read``) and a one-hour JWT of the first."""
    org_id = admin.organization("bench")
    key, victim = admin.keys(org_id, 2)
    with grpc.insecure_channel(address) as channel:
        reply = token_service_pb2.ExchangeApiKeyResponse.FromString(
            raw_call(channel, EXCHANGE, exchange_request(key, TOKEN_LIFETIME_SECONDS))
        )
    return Tenant(org_id, key, reply.access_token, victim)


@dataclass(frozen=True)
class Paired:
    """What a case's runs are paired with: a baseline load, sent to the empty server beside it."""

    load: Load
    server: EmptyServer


@dataclass(frozen=True)
class Measured:
    """A case's median run; with a paired baseline, its median run and its workers' CPU a call (µs).

    ``p99_over_baseline_ms``: each measured run's p99 minus that of the baseline run just before it.
    """

    run: Run
    baseline: Run | None = None
    baseline_cpu_us: float = math.nan
    p99_over_baseline_ms: tuple[float, ...] = ()


def _measure(
    context: Context,
    load: Load,
    frame_size: int,
    around: Callable[[float], AbstractContextManager[None]] | None = None,
    paired: Paired | None = None,
) -> Measured:
    """A warm-up run, then the median of the measured ones; ``around(seconds)`` wraps each run.

    With ``paired``, the baseline load runs just before each run, and what its runs cost the
    empty server's workers is counted too.
    """
    options = context.options
    runs, baselines, baseline_cpu = [], [], 0.0
    for index, seconds in enumerate([options.warmup_seconds] + [options.seconds] * options.repeat):
        if paired is not None:
            cpu_before = paired.server.cpu_seconds()
            baseline_totals = context.h2load.run(paired.load, seconds)
            if index:
                baseline_cpu += paired.server.cpu_seconds() - cpu_before
                baselines.append(judge(baseline_totals, EMPTY_FRAME_SIZE))
        with around(seconds) if around else nullcontext():
            totals = context.h2load.run(load, seconds)
        if index:
            runs.append(judge(totals, frame_size))
    if not baselines:
        return Measured(median_run(runs))
    differences = tuple(
        run.p99_ms - paired_run.p99_ms for run, paired_run in zip(runs, baselines, strict=True)
    )
    return Measured(
        median_run(runs), median_run(baselines), _per_call_us(baseline_cpu, baselines), differences
    )


def _per_call_us(cpu_seconds: float, runs: list[Run]) -> float:
    calls = sum(run.calls for run in runs)
    return cpu_seconds / calls * 1e6 if calls else math.nan


def _paired_baseline(context: Context, workers: Workers) -> Paired | None:
    server = context.paired_servers.get(workers)
    if server is None:
        return None
    return Paired(Load(server.port, EMPTY, b"", context.options.connections), server)


def _steady(
    context: Context, server: IdentityProcess, case: str, request: bytes, method: str, answer: Answer
) -> Row:
    frame_size = probe(server.address, method, request, answer)
    load = Load(server.port, method, request, context.options.connections)
    spent: list[Usage] = []

    @contextmanager
    def counted(_seconds: float) -> Iterator[None]:
        before = server.usage()
        yield
        spent.append(server.usage() - before)

    measured = _measure(context, load, frame_size, counted, _paired_baseline(context, server.workers))
    calls = measured.run.calls
    line = cache_line(case, server.workers, spent[1:], calls, measured.baseline_cpu_us)  # not the warm-up's
    context.results.lines.append(line)
    if measured.p99_over_baseline_ms:
        context.results.lines.append(p99_line(case, server.workers, measured.p99_over_baseline_ms))
    return Row("", server.workers, measured.run, measured.baseline)


def p99_line(case: str, workers: Workers, differences_ms: tuple[float, ...]) -> str:
    """Each run's p99 over its paired baseline run's, and their median.

    At full speed the p99 swings by a millisecond or more from run to run (bench/RESULTS.md);
    the table's figure is the difference of two medians, and this line shows the spread behind it.
    """
    runs = ", ".join(f"{difference:+.2f}" for difference in differences_ms)
    median = statistics.median(differences_ms)
    return f"'{case}', {workers} worker(s), p99 minus the paired baseline run's, run by run: {runs} ms (median {median:+.2f})"


def cache_line(
    case: str, workers: Workers, spent: list[Usage], calls: int, baseline_cpu_us: float = math.nan
) -> str:
    """How often each cache answered during ``case``'s runs, and the workers' CPU a call over them.

    A key-state miss read the database; ``calls`` is the number of calls the runs completed.
    A warm case is warm only while the caches are fresh, i.e. the change feed keeps up under load.
    The CPU a call costs moves less from run to run than the ratio to the baseline does, which
    makes it the figure to compare two versions of one case by; ``baseline_cpu_us``, what the
    empty handler's workers spent a call over the paired runs, is the figure to compare it with.
    """
    parts = []
    for index, cache in enumerate(CACHES):
        hits = sum(usage.lookups[index][1] for usage in spent)
        misses = sum(usage.lookups[index][2] for usage in spent)
        if hits + misses:
            parts.append(f"{cache} {hits / (hits + misses):.1%} of {hits + misses:.0f} ({misses:.0f} missed)")
    cpu = sum(usage.cpu_seconds for usage in spent) / calls * 1e6 if calls else math.nan
    paired = (
        "" if math.isnan(baseline_cpu_us) else f" (the empty handler's, paired: {baseline_cpu_us:.0f} µs)"
    )
    return (
        f"'{case}', {workers} worker(s), cache hits: {'; '.join(parts) or 'no lookups'}; "
        f"workers' CPU {cpu:.0f} µs a call{paired}"
    )


def baseline(context: Context, workers: Workers) -> Run:
    """The empty grpcio handler with ``workers`` processes, on its own (measured once per ``workers``)."""
    results = context.results
    if workers not in results.baselines:
        context.say(f"{BASELINE}, {workers} worker(s)")
        with empty_server(workers) as empty:
            frame_size = probe(f"127.0.0.1:{empty.port}", EMPTY, b"", Answer.EMPTY)
            run = _measure(context, Load(empty.port, EMPTY, b"", context.options.connections), frame_size).run
        results.baselines[workers] = run
        results.rows.append(Row(BASELINE, workers, run, run))
    return results.baselines[workers]


def _record(context: Context, case: str, row: Row) -> Row:
    recorded = Row(case, row.workers, row.run, row.baseline or context.results.baselines.get(row.workers))
    context.results.rows.append(recorded)
    return recorded


def check_key(context: Context, server: IdentityProcess, tenant: Tenant) -> None:
    """Check of the warm key, as h2load sends it (recorded per worker count for scaling)."""
    context.say(f"{CHECK_KEY}, {server.workers} worker(s)")
    row = _record(
        context,
        CHECK_KEY,
        _steady(context, server, CHECK_KEY, check_request(tenant.key), CHECK, Answer.ALLOWED),
    )
    context.results.check_key[server.workers] = row


def check_jwt(context: Context, server: IdentityProcess, tenant: Tenant) -> None:
    """Check of the warm key's JWT."""
    context.say(CHECK_JWT)
    _record(
        context,
        CHECK_JWT,
        _steady(context, server, CHECK_JWT, check_request(tenant.token), CHECK, Answer.ALLOWED),
    )


def exchange_warm(context: Context, server: IdentityProcess, tenant: Tenant) -> None:
    """ExchangeApiKey of the warm key."""
    context.say(EXCHANGE_WARM)
    _record(
        context,
        EXCHANGE_WARM,
        _steady(context, server, EXCHANGE_WARM, exchange_request(tenant.key), EXCHANGE, Answer.TOKEN),
    )


def check_serial(context: Context, server: IdentityProcess, tenant: Tenant) -> None:
    """Check of the warm JWT and of the warm key one call at a time, and the baseline alike.

    At full speed every call waits behind the calls of the other connections, so the p99 there is
    mostly queueing: it grows with any loss of throughput and moves with the machine's drift. One
    connection with one call in flight, the next sent as soon as the answer is in, never queues
    and never lets the server idle (on this machine a wake-up from idle costs more than a Check):
    its p99 is what one call costs, tail included. Before each run of a case, the empty handler
    gets the same load.
    """
    empty = context.paired_servers[server.workers]
    baseline = Paired(Load(empty.port, EMPTY, b"", connections=1), empty)
    rows = []
    for case, credential in ((CHECK_JWT, tenant.token), (CHECK_KEY, tenant.key)):
        context.say(f"{case}, one call at a time")
        request = check_request(credential)
        frame_size = probe(server.address, CHECK, request, Answer.ALLOWED)
        load = Load(server.port, CHECK, request, connections=1)
        measured = _measure(context, load, frame_size, paired=baseline)
        if measured.baseline is None:
            raise BenchError("the baseline did not run beside the case")
        rows.append(serial_row(case, server.workers, measured.run, measured.baseline))
    context.results.tables.append(
        (
            "One call at a time (1 connection; each run after the empty handler's alike)",
            Table(SERIAL_HEADERS, rows),
        )
    )


def check_during_flood(context: Context, server: IdentityProcess, tenant: Tenant) -> None:
    """Check of the warm key while a second h2load sends wrong-secret exchanges at a fixed rate.

    The flood's key is well formed (valid checksum) and names a real key's lookup handle (the
    tenant's other key), so each flood call gets past the format check to a secret
    verification and must be refused. h2load paces 4 connections at a quarter of
    ``--flood-rps`` each, with up to a second's worth of calls in flight, so the rate holds
    while refusals take up to a second. The flood starts a second before each run and ends a
    second after it.
    """
    options = context.options
    context.say(f"{CHECK_FLOOD}, {options.flood_rps:g}/s")
    flood_request = exchange_request(wrong_secret(tenant.victim_key))
    refusal = probe_refused(server.address, EXCHANGE, flood_request)
    answer_size = probe(server.address, EXCHANGE, exchange_request(tenant.victim_key), Answer.TOKEN, times=1)
    per_connection = options.flood_rps / FLOOD_CONNECTIONS
    # Up to a second of calls in flight, so the rate holds even while refusals are slow.
    flood = Load(
        server.port,
        EXCHANGE,
        flood_request,
        FLOOD_CONNECTIONS,
        streams=max(1, math.ceil(per_connection)),
        rps_per_connection=per_connection,
    )
    floods: list[Totals] = []

    @contextmanager
    def flooding(seconds: float) -> Iterator[None]:
        with context.h2load.background(flood, seconds + 2 * FLOOD_LEAD_SECONDS) as result:
            time.sleep(FLOOD_LEAD_SECONDS)
            yield
            floods.append(result())

    frame_size = probe(server.address, CHECK, check_request(tenant.key), Answer.ALLOWED)
    load = Load(server.port, CHECK, check_request(tenant.key), options.connections)
    checked = _measure(context, load, frame_size, flooding, _paired_baseline(context, server.workers))
    _record(context, CHECK_FLOOD, Row("", server.workers, checked.run, checked.baseline))
    measured = floods[1:]  # not the warm-up's
    seconds = sum(t.seconds for t in measured)
    done = sum(t.done for t in measured)
    answered = math.ceil(sum(t.data_bytes for t in measured) / answer_size)
    verdict = "all refused" if answered == 0 else f"{answered} GOT A TOKEN"
    context.results.lines.append(
        f"wrong-secret flood during '{CHECK_FLOOD}' ({len(measured)} runs, {seconds:.0f} s): "
        f"asked {options.flood_rps:g}/s, sent {sum(t.started for t in measured) / seconds:.0f}/s, "
        f"{done} completed ({done / seconds:.0f}/s), {done - answered} refused "
        f"({refusal} when probed): {verdict}"
    )


def exchange_cold(context: Context, server: IdentityProcess, admin: Admin, tenant: Tenant) -> None:
    """ExchangeApiKey where every call presents a key never presented before.

    The keys are created first through KeyService/CreateKey (production argon2id hashes),
    enough for argon2id's measured rate on every core the workers can use, with headroom;
    ``--cold-keys`` overrides the count. Python client processes send them, each key once.
    Just before each run, argon2id alone runs on as many cores for a second: the rate the
    exchange is held to, measured at the machine's speed of that moment.
    """
    options = context.options
    cores = min(server.workers.count, usable_cores())
    durations = [options.warmup_seconds] + [options.seconds] * options.repeat
    if options.cold_keys:
        shares = [max(1, int(options.cold_keys * seconds / sum(durations))) for seconds in durations]
    else:
        per_second = argon2_verifies_per_second(cores) * COLD_HEADROOM
        shares = [math.ceil(seconds * per_second) + options.connections for seconds in durations]
    context.say(f"{EXCHANGE_COLD}: creating {sum(shares) + 1} keys through CreateKey")
    keys = iter(admin.keys(tenant.org_id, sum(shares) + 1))
    probe(server.address, EXCHANGE, exchange_request(next(keys)), Answer.TOKEN, times=1)
    threads = max(1, options.connections // options.client_processes)
    runs, spent, alone, ran_out = [], [], [], 0
    context.say(EXCHANGE_COLD)
    for index, (seconds, share) in enumerate(zip(durations, shares, strict=True)):
        requests = [exchange_request(next(keys)) for _ in range(share)]
        if index:
            alone.append(argon2_verifies_per_second(cores))
        before = server.usage()
        result = drive(
            server.address,
            EXCHANGE,
            Answer.TOKEN,
            requests,
            processes=options.client_processes,
            threads=threads,
            seconds=seconds,
        )
        if index:
            measured = result.run()
            runs.append(measured)
            spent.append(ColdSpend.of(server.usage() - before, result.seconds, measured.rps))
            ran_out += result.exhausted
    run = median_run(runs)
    reference = statistics.median(alone)
    _record(context, EXCHANGE_COLD, Row("", server.workers, run, None))
    note = f"; keys ran out early in {ran_out} of {len(runs)} runs (raise --cold-keys)" if ran_out else ""
    context.results.lines.append(
        f"cold exchange: {run.rps:.1f}/s on {server.workers} worker(s), {cores} core(s): "
        f"{run.rps / cores:.1f}/s per core; argon2id alone (production profile) on {cores} core(s) at "
        f"once, just before each run: {reference:.1f}/s ({reference / cores:.1f}/s per core), so the "
        f"exchange ran at {run.rps / reference:.2f} of argon2id's own rate{note}"
    )
    context.results.lines.append(ColdSpend.median(spent).line())


@dataclass(frozen=True)
class ColdSpend:
    """Where the workers' CPU went during a cold-exchange run: in cores, and in ms an exchange."""

    argon2_cores: float
    other_cores: float
    argon2_ms: float  # CPU of one argon2id verification inside the workers
    other_ms: float  # the workers' CPU an exchange beyond argon2id

    @classmethod
    def of(cls, spent: Usage, seconds: float, rps: float) -> ColdSpend:
        """From what the workers spent over a run of ``seconds`` that answered ``rps`` exchanges a second."""
        other_seconds = spent.cpu_seconds - spent.argon2_cpu_seconds
        return cls(
            spent.argon2_cpu_seconds / seconds,
            other_seconds / seconds,
            1000 * spent.argon2_cpu_seconds / spent.argon2_hashes if spent.argon2_hashes else math.nan,
            1000 * other_seconds / (rps * seconds) if rps else math.nan,
        )

    @classmethod
    def median(cls, runs: list[ColdSpend]) -> ColdSpend:
        """Each figure's median over ``runs``."""
        return cls(*(statistics.median(values) for values in zip(*(astuple(r) for r in runs), strict=True)))

    def line(self) -> str:
        """The cores argon2id got and its share of the workers' CPU; what the rest of an exchange cost."""
        share = self.argon2_cores / (self.argon2_cores + self.other_cores)
        return (
            f"cold exchange, workers' CPU (median of runs): argon2id {self.argon2_cores:.2f} cores, "
            f"{self.argon2_ms:.1f} ms a verification; everything else {self.other_cores:.2f} cores, "
            f"{self.other_ms:.1f} ms an exchange; argon2id's share {share:.2f}; the Python clients "
            f"share the same {usable_cores()} cores"
        )


def scaling_line(context: Context) -> None:
    """The 2-worker / 1-worker throughput ratio of warm-key Check and of the baseline, workers pinned."""
    one, two = (context.results.check_key[workers] for workers in SCALING)
    check = two.run.rps / one.run.rps if one.run.rps else math.nan
    paired = one.baseline and two.baseline and one.baseline.rps
    empty = two.baseline.rps / one.baseline.rps if paired and two.baseline and one.baseline else math.nan
    context.results.lines.append(
        f"scaling, '{CHECK_KEY}', a core per worker: 2 workers / 1 worker = {check:.2f}x "
        f"(empty handler: {empty:.2f}x)"
    )
