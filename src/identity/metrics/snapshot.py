"""What one server process reports at a scrape: plain numbers, cheap to take and to pickle."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from identity.cache.lookups import Lookups
from identity.changefeed import ChangeFeed
from identity.crypto.pool import BoundedHasher
from identity.metrics.rpcs import RpcTally, RpcTotals


@dataclass(frozen=True)
class WorkerSnapshot:
    """One process's counters and gauges at one moment."""

    rpcs: RpcTotals
    lookups: dict[str, tuple[int, int]]  # cache -> (hits, misses)
    argon2_in_use: int
    argon2_threads: int
    argon2_capacity: int
    argon2_refused: int
    argon2_done: int
    argon2_cpu_seconds: float
    changefeed_lag_seconds: float
    changefeed_cursor: int


class Telemetry:
    """Reads what a server process counts: its RPCs, caches, argon2 pool and change feed."""

    def __init__(
        self, rpcs: RpcTally | None, lookups: Mapping[str, Lookups], hasher: BoundedHasher, feed: ChangeFeed
    ) -> None:
        """Read ``rpcs`` (None: not counted), the caches' ``lookups`` by name, ``hasher`` and ``feed``."""
        self._rpcs = rpcs
        self._lookups = lookups
        self._hasher = hasher
        self._feed = feed

    def snapshot(self) -> WorkerSnapshot:
        """Everything as it stands now."""
        return WorkerSnapshot(
            rpcs=self._rpcs.totals() if self._rpcs else RpcTotals(),
            lookups={name: (seen.hits, seen.misses) for name, seen in self._lookups.items()},
            argon2_in_use=self._hasher.in_use,
            argon2_threads=self._hasher.threads,
            argon2_capacity=self._hasher.capacity,
            argon2_refused=self._hasher.refused,
            argon2_done=self._hasher.done,
            argon2_cpu_seconds=self._hasher.cpu_seconds,
            changefeed_lag_seconds=self._feed.lag_seconds,
            changefeed_cursor=self._feed.cursor,
        )
