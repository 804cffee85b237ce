"""Command-line options of ``python -m bench``."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from bench.databases import DEFAULT_POSTGRESQL_URL

# The cases run on the main identity server, in the order they run.
IDENTITY_THROUGHPUT = (
    "check-jwt",
    "check-key",
    "check-serial",
    "exchange-warm",
    "exchange-cold",
    "check-flood",
)
CASES = ("baseline", *IDENTITY_THROUGHPUT, "scaling", "latency", "memory")
CASE_HELP = """cases (--cases, comma-separated; default: all of them):
  baseline        an empty grpcio handler on the same harness and workers (always run
                  when a throughput case runs: every ratio is to it)
  check-jwt       AuthorizationService/Check of a warm JWT
  check-key       Check of a warm API key
  check-serial    check-jwt and check-key one call at a time, each run after the
                  baseline's alike: what one call costs, without queueing
  exchange-warm   TokenService/ExchangeApiKey (v2) of a warm key
  exchange-cold   ExchangeApiKey of a never-seen key each call (argon2id every call)
  check-flood     check-key while a wrong-secret ExchangeApiKey flood runs
  scaling         check-key and the baseline with 1 and with 2 workers, each worker
                  pinned to a core of its own (identity serve --pin-workers)
  latency         v2 exchange latency, one call at a time, with 10 and 100,000 keys stored
  memory          peak RSS of one worker after 100,000 distinct keys were presented
"""


@dataclass(frozen=True)
class Options:
    """Everything a benchmark run is told."""

    database: str
    database_url: str
    workers: int
    pin_workers: bool
    seconds: float
    warmup_seconds: float
    repeat: int
    connections: int
    client_processes: int
    cases: tuple[str, ...]
    flood_rps: float
    cold_keys: int | None
    store_keys: int
    small_store_keys: int
    latency_keys: int
    markdown: Path | None

    def wants(self, *cases: str) -> bool:
        """Whether any of ``cases`` was asked for."""
        return any(case in self.cases for case in cases)


# name: (default, --quick default)
_SIZES: dict[str, tuple[float, float]] = {
    "seconds": (5.0, 1.0),
    "warmup_seconds": (2.0, 1.0),
    "repeat": (3, 1),
    "store_keys": (100_000, 2_000),
    "latency_keys": (50, 10),
}


def _cases(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in CASES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(CASES)}"
        )
    return names


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def parse(argv: list[str] | None = None) -> Options:
    """Read the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark the identity server against an empty grpcio handler and print a table.",
        epilog=CASE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--database", choices=("sqlite", "postgresql"), default="sqlite", help="(default sqlite)"
    )
    parser.add_argument(
        "--database-url",
        default=DEFAULT_POSTGRESQL_URL,
        help="PostgreSQL server to create (and drop) scratch databases on (default: %(default)s)",
    )
    parser.add_argument("--workers", type=_positive_int, default=2, help="server processes (default 2)")
    parser.add_argument(
        "--pin-workers",
        action="store_true",
        help="run every server, the baseline's too, with worker i on core i (identity serve --pin-workers)",
    )
    parser.add_argument("--seconds", type=_positive_float, help="length of one measured run (default 5)")
    parser.add_argument(
        "--warmup-seconds", type=_positive_float, help="the warm-up run before them (default 2)"
    )
    parser.add_argument(
        "--repeat", type=_positive_int, help="measured runs per case; the table shows medians (default 3)"
    )
    parser.add_argument(
        "--connections",
        type=_positive_int,
        default=16,
        help="h2load connections, one call in flight each (default 16)",
    )
    parser.add_argument(
        "--client-processes",
        type=_positive_int,
        default=2,
        help="Python client processes where h2load cannot drive a case (default 2); they share --connections threads",
    )
    parser.add_argument(
        "--cases", type=_cases, default=CASES, help="comma-separated subset of the cases below"
    )
    parser.add_argument(
        "--flood-rps",
        type=_positive_float,
        default=500.0,
        help="wrong-secret exchanges per second in check-flood (default 500)",
    )
    parser.add_argument(
        "--cold-keys",
        type=_positive_int,
        help="keys to create for exchange-cold (default: enough for argon2id's rate on every core)",
    )
    parser.add_argument(
        "--store-keys",
        type=_positive_int,
        help="keys stored for the large store of latency and memory (default 100000)",
    )
    parser.add_argument(
        "--small-store-keys",
        type=_positive_int,
        default=10,
        help="keys stored for the small store of latency, at least (default 10)",
    )
    parser.add_argument(
        "--latency-keys",
        type=_positive_int,
        help="never-seen keys exchanged per store size in latency (default 50)",
    )
    parser.add_argument("--markdown", type=Path, help="also write the results as Markdown to this file")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 1 s runs, 1 repeat, 2000 stored keys, 10 cold latency keys",
    )
    args = parser.parse_args(argv)
    sizes = {name: getattr(args, name) for name in _SIZES}
    for name, (default, quick) in _SIZES.items():
        if sizes[name] is None:
            sizes[name] = quick if args.quick else default
    return Options(
        database=args.database,
        database_url=args.database_url,
        workers=args.workers,
        pin_workers=args.pin_workers,
        seconds=float(sizes["seconds"]),
        warmup_seconds=float(sizes["warmup_seconds"]),
        repeat=int(sizes["repeat"]),
        connections=args.connections,
        client_processes=args.client_processes,
        cases=args.cases,
        flood_rps=args.flood_rps,
        cold_keys=args.cold_keys,
        store_keys=int(sizes["store_keys"]),
        small_store_keys=args.small_store_keys,
        latency_keys=int(sizes["latency_keys"]),
        markdown=args.markdown,
    )
