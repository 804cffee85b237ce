"""``python -m bench``: start the servers, drive the load, print the table. See ``--help`` and the README."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import grpc

from bench import store, throughput
from bench.context import Context
from bench.databases import scratch_database
from bench.h2load import H2Load, find_h2load
from bench.options import IDENTITY_THROUGHPUT, Options, parse
from bench.reference import autogroups_enabled, usable_cores
from bench.report import THROUGHPUT_HEADERS, Report, Table, throughput_row
from bench.rpc import BenchError
from bench.seed import Admin, bootstrap_database
from bench.servers import Workers

NEEDS_H2LOAD = ("baseline", *IDENTITY_THROUGHPUT, "scaling")
AUTOGROUP_WARNING = (
    "scheduler autogroups are on (kernel.sched_autogroup_enabled = 1): every PostgreSQL backend runs in "
    "a session, so an autogroup, of its own, and may then wait seconds for a CPU while the bench keeps "
    "the cores busy; the caches miss while its answers are late. `sysctl -w "
    "kernel.sched_autogroup_enabled=0` before the run measures the service instead (bench/RESULTS.md)"
)


def _throughput(context: Context, url: str, platform_key: str) -> None:
    """The baseline, the cases on the main server, and scaling, all on one database."""
    options = context.options
    tenants: list[throughput.Tenant] = []

    def tenant(admin: Admin, address: str) -> throughput.Tenant:
        if not tenants:
            tenants.append(throughput.create_tenant(admin, address))
        return tenants[0]

    workers = Workers(options.workers, options.pin_workers)
    throughput.baseline(context, workers)
    if options.wants(*IDENTITY_THROUGHPUT):
        with context.paired_baseline(workers), context.server(url, workers) as server:
            admin = Admin(server.address, platform_key)
            try:
                main = tenant(admin, server.address)
                if options.wants("check-jwt"):
                    throughput.check_jwt(context, server, main)
                if options.wants("check-key"):
                    throughput.check_key(context, server, main)
                if options.wants("check-serial"):
                    throughput.check_serial(context, server, main)
                if options.wants("exchange-warm"):
                    throughput.exchange_warm(context, server, main)
                if options.wants("exchange-cold"):
                    throughput.exchange_cold(context, server, admin, main)
                if options.wants("check-flood"):
                    throughput.check_during_flood(context, server, main)
            finally:
                admin.close()
    if options.wants("scaling"):
        for scaled in throughput.SCALING:
            throughput.baseline(context, scaled)
            if scaled not in context.results.check_key:
                with context.paired_baseline(scaled), context.server(url, scaled) as server:
                    admin = Admin(server.address, platform_key)
                    try:
                        throughput.check_key(context, server, tenant(admin, server.address))
                    finally:
                        admin.close()
        throughput.scaling_line(context)


def run(context: Context) -> None:
    """Every case asked for, each group on a scratch database of its own."""
    options = context.options
    if options.wants(*NEEDS_H2LOAD):
        with scratch_database(options.database, options.database_url, context.scratch) as url:
            _throughput(context, url, bootstrap_database(url))
    if options.wants("latency", "memory"):
        with scratch_database(options.database, options.database_url, context.scratch) as url:
            platform_key = bootstrap_database(url)
            large = store.latency(context, url, platform_key) if options.wants("latency") else None
            if options.wants("memory"):
                store.memory(context, url, platform_key, large)


def report(options: Options, context: Context) -> Report:
    """The results as a report, throughput rows in the order they were measured."""
    title = (
        f"identity bench: {options.database}, {options.workers} worker(s), {usable_cores()} cores; "
        f"h2load {options.connections} connections x 1 call; runs of {options.seconds:g} s after a "
        f"{options.warmup_seconds:g} s warm-up, median of {options.repeat}; errors summed over runs"
    )
    result = Report(title)
    rows = context.results.rows
    if rows:
        table = Table(
            THROUGHPUT_HEADERS, [throughput_row(r.case, r.workers, r.run, r.baseline) for r in rows]
        )
        result.tables.append(
            ("Throughput (x baseline: rps over the empty handler's with as many workers)", table)
        )
    result.tables += context.results.tables
    result.lines += context.results.lines
    if _warn_of_autogroups(options):
        result.lines.append(AUTOGROUP_WARNING)
    return result


def _warn_of_autogroups(options: Options) -> bool:
    return options.database == "postgresql" and autogroups_enabled()


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the report (and write it as Markdown when asked)."""
    options = parse(argv)
    h2load = H2Load(find_h2load()) if options.wants(*NEEDS_H2LOAD) else None
    with tempfile.TemporaryDirectory(prefix="identity-bench-") as scratch:
        context = Context(options, h2load, Path(scratch))
        if _warn_of_autogroups(options):
            context.say(AUTOGROUP_WARNING)
        try:
            run(context)
        except (BenchError, grpc.RpcError) as error:
            # A call the server failed, or could not take: what its log says goes with the error.
            for log in context.server_logs()[-2:]:
                print(f"--- {log.name} (last lines)", file=sys.stderr)
                print("\n".join(log.read_text(errors="replace").splitlines()[-20:]), file=sys.stderr)
            print(f"bench: {error}", file=sys.stderr)
            return 1
    result = report(options, context)
    print(result.text())
    if options.markdown is not None:
        options.markdown.write_text(result.markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
