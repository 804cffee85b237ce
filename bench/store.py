"""Cases about the number of stored keys: v2 exchange latency at 10 vs 100,000 keys, and memory.

Both run one worker (``--workers 1``) on a database of their own. The large store is filled by
inserting rows directly (cheap argon2id hashes, see :func:`bench.seed.insert_keys`); the keys
whose latency is measured are created through the API with the production profile.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from sqlalchemy import func, select

from bench.clients import drive, sequential
from bench.context import Context
from bench.report import Table, millis
from bench.rpc import CHECK, EXCHANGE, Answer, check_request, exchange_request
from bench.seed import KEYS_PER_ACCOUNT, Admin, insert_keys
from bench.servers import Workers, memory_mib
from bench.stats import Run
from identity.store.database import Database
from identity.store.models import ApiKeyRow

LATENCY_HEADERS = (
    "keys stored",
    "warm p50 ms",
    "warm p99 ms",
    "cold p50 ms",
    "cold p99 ms",
    "cold keys",
    "errors",
)


@dataclass
class Store:
    """A database of keys: its organization and the plaintext of every key the benchmark made."""

    url: str
    platform_key: str
    org_id: str
    plaintexts: list[str]


def stored_keys(url: str) -> int:
    """How many rows ``api_keys`` holds."""
    db = Database(url)
    try:
        with db.read() as session:
            return int(session.scalar(select(func.count()).select_from(ApiKeyRow)) or 0)
    finally:
        db.dispose()


def _create(context: Context, store: Store, keys: int, accounts: int = 0) -> tuple[list[str], list[str]]:
    """``keys`` keys through CreateKey and ``accounts`` empty service accounts, on a server of their own."""
    with context.server(store.url, Workers(1)) as server:
        admin = Admin(server.address, store.platform_key)
        try:
            if not store.org_id:
                store.org_id = admin.organization("bench store")
            return admin.keys(store.org_id, keys), admin.accounts(store.org_id, accounts)
        finally:
            admin.close()


def _fill(context: Context, store: Store, accounts: list[str], count: int) -> None:
    context.say(f"inserting {count} keys into the database")
    store.plaintexts += insert_keys(
        store.url,
        store.org_id,
        accounts,
        count,
        progress=lambda done: context.say(f"  {done} inserted") if done % 20_000 == 0 else None,
    )


def _exchange_latency(context: Context, url: str, warm_key: str, cold_keys: list[str]) -> tuple[Run, Run]:
    """On a freshly started worker: warm-up, warm latency (one key over and over), then cold (each key once)."""
    options = context.options
    with context.server(url, Workers(1)) as server:
        warm = itertools.repeat(exchange_request(warm_key))
        sequential(server.address, EXCHANGE, Answer.TOKEN, warm, options.warmup_seconds)
        warm_run = sequential(server.address, EXCHANGE, Answer.TOKEN, warm, options.seconds).run()
        cold = [exchange_request(key) for key in cold_keys]
        cold_run = sequential(server.address, EXCHANGE, Answer.TOKEN, cold).run()
    return warm_run, cold_run


def latency(context: Context, url: str, platform_key: str) -> Store:
    """v2 exchange latency, one call at a time, with a small store and then with the large one.

    Small store: the measured keys (one warm, ``--latency-keys`` cold, made through CreateKey),
    topped up to ``--small-store-keys``. Then fresh measured keys are made the same way, the
    store is filled to ``--store-keys`` with inserted rows, and the server restarted: the same
    measurement again. Each measurement runs on a freshly started worker, so nothing the
    server may cache survives from creation or from the other store size.
    """
    options = context.options
    count = options.latency_keys
    store = Store(url, platform_key, "", [])
    context.say(f"latency: the small store ({options.small_store_keys} keys at least)")
    small, _ = _create(context, store, 1 + count)
    store.plaintexts += small
    top_up = options.small_store_keys - stored_keys(url)
    if top_up > 0:
        store.plaintexts += _create(context, store, top_up)[0]
    small_size = stored_keys(url)
    small_runs = _exchange_latency(context, url, small[0], small[1:])
    bulk = max(0, options.store_keys - small_size - (1 + count))
    context.say(f"latency: the large store ({options.store_keys} keys)")
    fresh, accounts = _create(context, store, 1 + count, math.ceil(bulk / KEYS_PER_ACCOUNT))
    store.plaintexts += fresh
    _fill(context, store, accounts, bulk)
    large_size = stored_keys(url)
    large_runs = _exchange_latency(context, url, fresh[0], fresh[1:])

    def row(size: int, runs: tuple[Run, Run]) -> tuple[str, ...]:
        warm, cold = runs
        figures = (warm.p50_ms, warm.p99_ms, cold.p50_ms, cold.p99_ms)
        return (
            str(size),
            *(millis(value) for value in figures),
            str(cold.calls),
            str(warm.errors + cold.errors),
        )

    ratios = [
        f"{large / small:.2f}x" if small else "-"
        for small, large in zip(_figures(small_runs), _figures(large_runs), strict=True)
    ]
    table = Table(LATENCY_HEADERS, [row(small_size, small_runs), row(large_size, large_runs)])
    table.rows.append((f"{large_size} / {small_size}", *ratios, "", ""))
    context.results.tables.append(
        ("v2 ExchangeApiKey latency by keys stored (1 worker, one call at a time)", table)
    )
    return store


def _figures(runs: tuple[Run, Run]) -> tuple[float, float, float, float]:
    warm, cold = runs
    return warm.p50_ms, warm.p99_ms, cold.p50_ms, cold.p99_ms


def memory(context: Context, url: str, platform_key: str, store: Store | None) -> None:
    """Peak RSS (VmHWM) of one worker after Check of every key the benchmark stored, each once.

    Uses the latency case's large store when it ran, else fills one of ``--store-keys`` keys.
    The keys go from Python client processes, each key once; then the worker's VmHWM is read
    from /proc.
    """
    options = context.options
    if store is None:
        store = Store(url, platform_key, "", [])
        count = options.store_keys - 1  # the platform key is stored too
        _, accounts = _create(context, store, 0, math.ceil(count / KEYS_PER_ACCOUNT))
        _fill(context, store, accounts, count)
    size = stored_keys(url)
    requests = [check_request(key) for key in store.plaintexts]
    context.say(f"memory: Check of {len(requests)} distinct keys on one worker")
    with context.server(url, Workers(1)) as server:
        result = drive(
            server.address,
            CHECK,
            Answer.ALLOWED,
            requests,
            processes=options.client_processes,
            threads=max(1, options.connections // options.client_processes),
        )
        pids = server.worker_pids()
        peak = max(memory_mib(pid, "VmHWM") for pid in pids)
        now = max(memory_mib(pid, "VmRSS") for pid in pids)
    context.results.lines.append(
        f"memory: one worker's peak RSS (VmHWM) after Check of {len(requests)} distinct keys "
        f"({size} stored): {peak:.0f} MiB (VmRSS at the end: {now:.0f} MiB); the Checks took "
        f"{result.seconds:.1f} s ({len(result.latencies_s) / result.seconds:.0f}/s), {result.errors} errors"
    )
