"""Writes that must not slow a request: audit events of checks and exchanges, key last-used times.

They are queued in memory and written in batches by one thread, at most once a second; a key's
``last_used_time`` is written at most once a minute, and throttled attempts alike are merged
into one row per flush. ``stop`` flushes what is queued, so a graceful shutdown loses nothing.
A full queue drops (and counts) rather than blocking a request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

from sqlalchemy.exc import IntegrityError

from identity.domain.errors import IdentityError
from identity.domain.model import AuditEvent
from identity.store.database import Database, is_refusal
from identity.store.repository import Repository

log = logging.getLogger(__name__)

FLUSH_SECONDS = 1.0
LAST_USED_RESOLUTION_SECONDS = 60.0
MAX_QUEUED_EVENTS = 50_000


class BackgroundWriter:
    """Batches audit events and last-used times into the database off the request path."""

    def __init__(
        self, db: Database, flush_seconds: float = FLUSH_SECONDS, clock: Callable[[], float] = time.time
    ) -> None:
        """Write into ``db`` every ``flush_seconds``; a key's use is noted at ``clock()`` (POSIX time)."""
        self._db = db
        self._flush_seconds = flush_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._events: deque[AuditEvent] = deque()
        self._throttled: dict[tuple[str, ...], tuple[AuditEvent, int]] = {}
        # key id -> POSIX time of its last use, to write; of its last use written
        self._touched: dict[str, float] = {}
        self._written: dict[str, float] = {}
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="background-writer", daemon=True)
        self.dropped = 0

    def record(self, event: AuditEvent) -> None:
        """Queue an audit event."""
        with self._lock:
            if len(self._events) >= MAX_QUEUED_EVENTS:
                self.dropped += 1
                return
            self._events.append(event)

    def record_throttled(self, key: tuple[str, ...], event: Callable[[], AuditEvent]) -> None:
        """Count a throttled attempt; the first of each ``key`` in a flush builds its audit event.

        A flood may bring thousands a second, so like attempts (same ``key``: action, target,
        reason, organization) are written as one row per flush, the first one's, with
        ``details["attempts"]`` counting them; the others cost a dictionary update.
        """
        with self._lock:
            held = self._throttled.get(key)
            if held is not None:
                self._throttled[key] = (held[0], held[1] + 1)
                return
            if len(self._throttled) >= MAX_QUEUED_EVENTS:
                self.dropped += 1
                return
        first = event()
        with self._lock:
            held = self._throttled.get(key)
            self._throttled[key] = (held[0], held[1] + 1) if held else (first, 1)

    def touch(self, key_id: str) -> None:
        """Note that a key was used now; written if its last write is a minute old or more."""
        now = self._clock()
        # Most uses of a warm key come within the minute of its last write: they read this
        # without the lock, as it is never changed, only replaced by another.
        last = self._written.get(key_id)
        if last is not None and now - last < LAST_USED_RESOLUTION_SECONDS:
            return
        with self._lock:
            self._touched[key_id] = now

    def start(self) -> None:
        """Start the writer thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and write everything still queued."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()
        self.flush()

    def flush(self) -> None:
        """Write what is queued now; on a database failure keep it for the next round."""
        with self._lock:
            events, self._events = list(self._events), deque()
            throttled, self._throttled = self._throttled, {}
            touched, self._touched = self._touched, {}
        events += [
            replace(event, details={**event.details, "attempts": str(count)})
            for event, count in throttled.values()
        ]
        if not events and not touched:
            return
        try:
            self._write(events, touched)
        except (IdentityError, IntegrityError) as error:
            if is_refusal(error):
                # Retried as it is, the batch would fail at every flush and take every later
                # event with it: find what the database refuses.
                self._write_one_at_a_time(events, touched)
            else:
                self._keep_for_retry(events, touched)
            return
        self._note_written(touched)

    def _write(self, events: list[AuditEvent], touched: dict[str, float]) -> None:
        with self._db.write() as session:
            repo = Repository(session)
            repo.add_audit_events(events)
            repo.touch_keys({key_id: datetime.fromtimestamp(when, UTC) for key_id, when in touched.items()})

    def _write_one_at_a_time(self, events: list[AuditEvent], touched: dict[str, float]) -> None:
        """Write each event alone, dropping (and counting) only those the database refuses."""
        for index, event in enumerate(events):
            try:
                self._write([event], {})
            except (IdentityError, IntegrityError) as error:
                if not is_refusal(error):  # an outage meanwhile
                    self._keep_for_retry(events[index:], touched)
                    return
                log.error("audit event %s (%s) refused by the database: dropped", event.id, event.action)
                with self._lock:
                    self.dropped += 1
        try:
            self._write([], touched)
        except (IdentityError, IntegrityError):
            self._keep_for_retry([], touched)
            return
        self._note_written(touched)

    def _keep_for_retry(self, events: list[AuditEvent], touched: dict[str, float]) -> None:
        log.warning(
            "background write failed; %d events and %d keys kept for retry", len(events), len(touched)
        )
        with self._lock:
            self._events.extendleft(reversed(events))
            self._touched = touched | self._touched

    def _note_written(self, touched: dict[str, float]) -> None:
        now = self._clock()
        with self._lock:
            # Only writes of the last minute decide anything: forget older ones, or this grows with every key.
            written = {k: t for k, t in self._written.items() if now - t < LAST_USED_RESOLUTION_SECONDS}
            written.update(touched)
            self._written = written

    def _run(self) -> None:
        while not self._stopping.wait(self._flush_seconds):
            self.flush()
