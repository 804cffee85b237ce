"""Warm calls are answered on the event loop; cold ones run again on a request thread, with no trace of the try."""

from __future__ import annotations

import gc
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import grpc
import pytest

from identity.app.tokens import TokenExchange
from identity.checks import DecisionEngine
from identity.domain.errors import IdentityError
from identity.services.keys import WATCH_POLL_SECONDS
from identity.services.loop import CallContext, Refusal
from identity.v1 import (
    audit_service_pb2,
    authorization_service_pb2,
    common_pb2,
    key_service_pb2,
    token_service_pb2,
)
from tests.api.test_hot_path import Tenant, audit_events
from tests.helpers import expect_error, forged

LOOP_THREAD = "grpc-loop"


@pytest.fixture
def tenant(harness: Any) -> Tenant:
    return Tenant(harness)


@contextmanager
def finished_on(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> Iterator[list[str]]:
    """The threads on which ``owner.name`` came to an end: returned, or raised an error.

    A try on the event loop that would wait raises WouldBlock, which is no end: it runs again.
    """
    threads: list[str] = []
    original = getattr(owner, name)

    def spied(*args: Any, **kwargs: Any) -> Any:
        try:
            result = original(*args, **kwargs)
        except Exception:
            threads.append(threading.current_thread().name)
            raise
        threads.append(threading.current_thread().name)
        return result

    monkeypatch.setattr(owner, name, spied)
    yield threads
    monkeypatch.setattr(owner, name, original)


def check(
    tenant: Tenant, credential: str, permission: str, client_ip: str = ""
) -> authorization_service_pb2.CheckResponse:
    request = authorization_service_pb2.CheckRequest(
        credential=credential, permissions=[permission], client_ip=client_ip
    )
    return tenant.checks.Check(request)


def test_warm_checks_and_exchanges_end_on_the_loop_and_cold_ones_on_request_threads(
    tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = tenant.key()
    with finished_on(monkeypatch, DecisionEngine, "check") as checks:
        assert check(tenant, created.api_key, "stock:read").allowed  # cold: argon2 and the database
        assert check(tenant, created.api_key, "stock:read", "10.0.0.7").allowed  # warm, judged anew
        denied = check(tenant, created.api_key, "stock:write")  # warm, a denial
    assert denied.reason == common_pb2.DECISION_REASON_INSUFFICIENT_SCOPE
    assert checks[0].startswith("rpc") and checks[1:] == [LOOP_THREAD, LOOP_THREAD]

    with finished_on(monkeypatch, TokenExchange, "_exchange") as exchanges:
        other = tenant.key()
        tokens = [tenant.exchange(other.api_key).access_token for _ in range(3)]
    assert exchanges[0].startswith("rpc") and exchanges[1:] == [LOOP_THREAD, LOOP_THREAD]
    with finished_on(monkeypatch, DecisionEngine, "check") as checks:
        assert check(tenant, tokens[0], "stock:read").allowed  # a token never seen: verified on the loop
    assert checks == [LOOP_THREAD]


def test_admin_calls_never_run_on_the_loop(tenant: Tenant, monkeypatch: pytest.MonkeyPatch) -> None:
    with finished_on(monkeypatch, TokenExchange, "jwks_json") as served:
        for _ in range(3):
            tenant.tokens.GetJwks(token_service_pb2.GetJwksRequest())
    assert len(served) == 3 and all(name.startswith("rpc") for name in served)


def test_a_cold_try_leaves_no_trace(tenant: Tenant) -> None:
    """Tried on the loop, then run on a request thread: audited once, and a failure spent once."""
    created = tenant.key()
    tenant.exchange(created.api_key)
    wrong = forged(created.api_key)
    for _ in range(2):
        expect_error(lambda: tenant.exchange(wrong), grpc.StatusCode.UNAUTHENTICATED, "INVALID_API_KEY")
    denied = check(tenant, wrong, "stock:read")
    assert denied.reason == common_pb2.DECISION_REASON_INVALID_API_KEY
    tenant.harness.server.writer.flush()
    exchanges = [e for e in audit_events(tenant, "token.exchange") if e.target == created.key.id]
    assert [(e.outcome, e.reason) for e in exchanges] == [(audit_service_pb2.AUDIT_OUTCOME_SUCCESS, "")]
    refused = [e for e in audit_events(tenant, "token.exchange") if e.reason == "INVALID_API_KEY"]
    assert len(refused) == 2
    checked = [e for e in audit_events(tenant, "authz.check") if e.reason == "INVALID_API_KEY"]
    assert len(checked) == 1


@pytest.mark.settings(failed_attempts_per_key=3)
def test_a_cold_try_spends_a_failed_attempt_once(tenant: Tenant) -> None:
    created = tenant.key()
    wrong = forged(created.api_key)
    for _ in range(3):
        expect_error(lambda: tenant.exchange(wrong), grpc.StatusCode.UNAUTHENTICATED, "INVALID_API_KEY")
    expect_error(lambda: tenant.exchange(wrong), grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")


@pytest.mark.settings(failed_attempts_per_key=1)
def test_a_refusal_on_the_loop_leaves_no_cycle_for_the_collector(tenant: Tenant) -> None:
    """A refused call's errors, and the handler frames their tracebacks hold, are freed at once.

    A flood is refusals: left in a reference cycle (grpcio keeps its abort exception on the
    call), each would wait for the garbage collector with every frame of its handler.
    """
    wrong = forged(tenant.key().api_key)
    expect_error(lambda: tenant.exchange(wrong), grpc.StatusCode.UNAUTHENTICATED, "INVALID_API_KEY")
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what the collector finds is kept in gc.garbage, to be looked at
    try:
        for _ in range(5):  # throttled: refused on the loop, before any wait
            expect_error(lambda: tenant.exchange(wrong), grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")
        gc.collect()
        cyclic = [type(found).__name__ for found in gc.garbage if isinstance(found, Refusal | IdentityError)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert cyclic == []


def handlers_running(name: str) -> int:
    """How many threads are inside a function called ``name`` right now (a running handler's frame)."""
    running = 0
    for frame in sys._current_frames().values():
        stack: FrameType | None = frame
        while stack is not None and stack.f_code.co_name != name:
            stack = stack.f_back
        running += stack is not None
    return running


def test_a_watch_the_client_leaves_ends_and_frees_its_request_thread(tenant: Tenant) -> None:
    def watchers_become(count: int) -> bool:
        deadline = time.monotonic() + 3 * WATCH_POLL_SECONDS + 1
        while handlers_running("WatchKeyEvents") != count and time.monotonic() < deadline:
            time.sleep(0.05)
        return handlers_running("WatchKeyEvents") == count

    tenant.key()
    request = key_service_pb2.WatchKeyEventsRequest(org_id=tenant.org_id)
    streams = [
        tenant.admin.keys.WatchKeyEvents(request, metadata=tenant.admin.metadata, timeout=30)
        for _ in range(2)
    ]
    assert all(next(stream).event.type == key_service_pb2.KEY_EVENT_TYPE_CREATED for stream in streams)
    assert watchers_become(2)  # each waits for the next change on a request thread
    for stream in streams:
        stream.cancel()
    assert watchers_become(0)
    assert tenant.check(tenant.key().api_key).allowed  # the threads serve other calls again


class _CallReads:
    """Stands in front of grpcio's asyncio call: notes the thread of every read, then reads."""

    def __init__(self, call: Any, threads: list[str]) -> None:
        self._call = call
        self._threads = threads

    def peer(self) -> Any:
        self._threads.append(threading.current_thread().name)
        return self._call.peer()

    def invocation_metadata(self) -> Any:
        self._threads.append(threading.current_thread().name)
        return self._call.invocation_metadata()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._call, name)


def test_grpcios_call_is_read_on_the_loop_only(tenant: Tenant, monkeypatch: pytest.MonkeyPatch) -> None:
    """Read on a request thread while the loop finished it, a call's peer crashed the process."""
    threads: list[str] = []
    adopt = CallContext.__init__

    def reads_noted(self: CallContext, call: Any) -> None:
        adopt(self, _CallReads(call, threads))

    monkeypatch.setattr(CallContext, "__init__", reads_noted)
    created = tenant.key()  # an admin call: a request thread from the start
    assert tenant.exchange(created.api_key).access_token  # cold: again on a request thread
    assert tenant.check(tenant.key().api_key).allowed  # cold
    assert tenant.check(created.api_key).allowed  # warm: on the loop
    watch = tenant.admin.keys.WatchKeyEvents(
        key_service_pb2.WatchKeyEventsRequest(org_id=tenant.org_id),
        metadata=tenant.admin.metadata,
        timeout=30,
    )
    assert next(watch).event.type == key_service_pb2.KEY_EVENT_TYPE_CREATED  # a stream's steps: threads
    watch.cancel()
    assert threads and set(threads) == {LOOP_THREAD}, threads
    calls = 6  # two CreateKey, an exchange, two Checks, a watch: each read its peer and metadata once at most
    assert len(threads) <= 2 * calls
