"""identity.client end to end: the sample inventory service (examples/downstream) protected by the
interceptor, called through the token-refreshing channel, against a real identity server."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import grpc
import pytest
from google.protobuf.json_format import MessageToDict
from google.protobuf.struct_pb2 import Struct
from google.protobuf.wrappers_pb2 import StringValue

from examples.downstream import aio_inventory, inventory
from examples.downstream.client import get_item
from identity.client import (
    AsyncTokenSource,
    AuthInterceptor,
    OfflineAuthorizer,
    TokenSource,
    aio_bearer_channel,
    bearer_channel,
)
from identity.v1 import key_service_pb2, token_service_pb2, token_service_pb2_grpc
from tests.conftest import Harness
from tests.helpers import details_of, expect_error

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED
GET, PUT, WATCH = (f"/{inventory.SERVICE}/{m}" for m in ("GetItem", "PutItem", "WatchItems"))


class Counting(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Counts the calls made through a channel, by method name."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        with self._lock:
            self.calls[details.method.rpartition("/")[2]] += 1
        return continuation(details, request)


class AioCounting(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Counts the calls made through a grpc.aio channel, by method name."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        name = details.method.decode() if isinstance(details.method, bytes) else details.method
        self.calls[name.rpartition("/")[2]] += 1
        return await continuation(details, request)


class Tenant:
    """An organization and service account with keys of chosen scopes."""

    def __init__(self, harness: Harness) -> None:
        self.harness = harness
        self.platform = harness.admin()
        self.org_id = self.platform.create_org("Downstream Inc").id
        self.principal_id = self.platform.create_principal(self.org_id).id

    def key(self, *scopes: str) -> key_service_pb2.CreateKeyResponse:
        return self.platform.create_key(self.org_id, self.principal_id, list(scopes))


@pytest.fixture
def tenant(harness: Harness) -> Tenant:
    return Tenant(harness)


@pytest.fixture
def counted(harness: Harness) -> Iterator[tuple[grpc.Channel, Counting]]:
    """A channel to the identity server that counts the calls made through it."""
    counter = Counting()
    with grpc.insecure_channel(harness.address) as raw:
        yield grpc.intercept_channel(raw, counter), counter


def start_inventory(harness: Harness, check: bool) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(harness.address) as identity:
        server, port = inventory.serve(identity, check=check)
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                yield channel
        finally:
            server.stop(0)


@pytest.fixture
def offline(harness: Harness) -> Iterator[grpc.Channel]:
    """A raw channel to the inventory service judging callers offline from the JWK Set."""
    yield from start_inventory(harness, check=False)


@pytest.fixture
def checking(harness: Harness) -> Iterator[grpc.Channel]:
    """A raw channel to the inventory service judging callers with AuthorizationService.Check."""
    yield from start_inventory(harness, check=True)


def call(channel: grpc.Channel, method: str, item: str = "widget", **kwargs: Any) -> Struct:
    stub = channel.unary_unary(
        method, request_serializer=StringValue.SerializeToString, response_deserializer=Struct.FromString
    )
    return stub(StringValue(value=item), timeout=5, **kwargs)


def watch(channel: grpc.Channel, item: str = "widget") -> list[Struct]:
    stub = channel.unary_stream(
        WATCH, request_serializer=StringValue.SerializeToString, response_deserializer=Struct.FromString
    )
    return list(stub(StringValue(value=item), timeout=5))


def exchanged(tenant: Tenant, api_key: str, **fields: Any) -> str:
    tokens = token_service_pb2_grpc.TokenServiceStub(tenant.harness.channel)
    return tokens.ExchangeApiKey(
        token_service_pb2.ExchangeApiKeyRequest(api_key=api_key, **fields)
    ).access_token


# --- mode (a): offline JWT verification -----------------------------------------------------------


def test_allowed_call_sees_the_verified_caller(
    harness: Harness, tenant: Tenant, offline: grpc.Channel
) -> None:
    created = tenant.key("inventory:read")
    channel = bearer_channel(offline, TokenSource(harness.channel, created.api_key))
    reply = get_item(channel, "widget")
    assert reply["item"] == "widget" and reply["principal_id"] == tenant.principal_id
    assert reply["org_id"] == tenant.org_id and reply["key_id"] == created.key.id
    assert MessageToDict(reply)["scopes"] == ["inventory:read"] and reply["token_id"]
    assert [r["item"] for r in watch(channel)] == ["widget-0", "widget-1", "widget-2"]


def test_wrong_scope_is_insufficient_scope(harness: Harness, tenant: Tenant, offline: grpc.Channel) -> None:
    channel = bearer_channel(offline, TokenSource(harness.channel, tenant.key("inventory:read").api_key))
    details = expect_error(lambda: call(channel, PUT), PERMISSION_DENIED, "INSUFFICIENT_SCOPE")
    assert "inventory:write" in details.message
    other = bearer_channel(offline, TokenSource(harness.channel, tenant.key("billing:*").api_key))
    expect_error(lambda: watch(other), PERMISSION_DENIED, "INSUFFICIENT_SCOPE")


def test_no_or_bad_credential_is_unauthenticated(tenant: Tenant, offline: grpc.Channel) -> None:
    expect_error(lambda: call(offline, GET), UNAUTHENTICATED, "MISSING_AUTHORIZATION")
    expect_error(lambda: watch(offline), UNAUTHENTICATED, "MISSING_AUTHORIZATION")
    expect_error(
        lambda: call(offline, GET, metadata=(("authorization", "Basic abc"),)),
        UNAUTHENTICATED,
        "MISSING_AUTHORIZATION",
    )
    api_key = tenant.key("inventory:read").api_key
    token = exchanged(tenant, api_key)
    for bad in (api_key, token[:-4] + "AAAA", "eyJ.eyJ.x", token.replace(".", "", 1)):
        bearer = (("authorization", f"Bearer {bad}"),)
        expect_error(lambda: call(offline, GET, metadata=bearer), UNAUTHENTICATED, "INVALID_TOKEN")  # noqa: B023
    header = token.partition(".")[0]
    expect_error(
        lambda: call(offline, GET, metadata=(("authorization", f"Bearer {header}.e30.sig"),)),
        UNAUTHENTICATED,
        "INVALID_TOKEN",
    )
    # a token may come in x-api-key as well
    assert call(offline, GET, metadata=(("x-api-key", token),))["item"] == "widget"


def test_undeclared_methods_are_refused(harness: Harness, tenant: Tenant) -> None:
    interceptor = AuthInterceptor(OfflineAuthorizer(harness.channel), {GET: "inventory:read"})
    server = grpc.server(ThreadPoolExecutor(4), interceptors=[interceptor])
    server.add_generic_rpc_handlers([inventory.HANDLERS])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as raw:
            channel = bearer_channel(raw, TokenSource(harness.channel, tenant.key("*").api_key))
            assert call(channel, GET)["item"] == "widget"
            details = expect_error(lambda: call(channel, PUT), grpc.StatusCode.INTERNAL, "INTERNAL")
            assert "declares no permission" in details.message
    finally:
        server.stop(0)
    with pytest.raises(ValueError, match="full method name"):
        AuthInterceptor(OfflineAuthorizer(harness.channel), {"GetItem": "inventory:read"})
    with pytest.raises(ValueError, match="permission"):
        AuthInterceptor(OfflineAuthorizer(harness.channel), {GET: "Inventory:Read"})


def test_unknown_kid_refetches_the_jwks_at_most_once_per_interval(
    tenant: Tenant, counted: tuple[grpc.Channel, Counting]
) -> None:
    identity, counter = counted
    api_key = tenant.key("inventory:read").api_key
    eager, lazy = (
        OfflineAuthorizer(identity, refetch_seconds=0),
        OfflineAuthorizer(identity, refetch_seconds=60),
    )
    first = exchanged(tenant, api_key)
    for authorizer in (eager, lazy):
        authorizer.authorize(first, "inventory:read", "127.0.0.1")
        authorizer.authorize(first, "inventory:read", "127.0.0.1")
    assert counter.calls["GetJwks"] == 2  # once each, then cached
    tokens = token_service_pb2_grpc.TokenServiceStub(tenant.harness.channel)
    tokens.RotateSigningKey(token_service_pb2.RotateSigningKeyRequest(), metadata=tenant.platform.metadata)
    rotated = exchanged(tenant, api_key)
    assert eager.authorize(rotated, "inventory:read", "127.0.0.1").principal_id == tenant.principal_id
    for _ in range(3):
        with pytest.raises(Exception, match="invalid") as refused:
            lazy.authorize(rotated, "inventory:read", "127.0.0.1")
        assert getattr(refused.value, "reason", None) == "INVALID_TOKEN"
    assert counter.calls["GetJwks"] == 3  # the lazy one may not refetch within its interval


# --- the channel helper: caching, refresh across expiry, threads ----------------------------------


def test_token_is_cached_then_refreshed_across_expiry_by_one_exchange(
    tenant: Tenant, counted: tuple[grpc.Channel, Counting], offline: grpc.Channel
) -> None:
    identity, counter = counted
    tokens = TokenSource(identity, tenant.key("inventory:read").api_key, lifetime=timedelta(seconds=2))
    channel = bearer_channel(offline, tokens)
    first = {get_item(channel, "a")["token_id"] for _ in range(5)}
    assert len(first) == 1 and counter.calls["ExchangeApiKey"] == 1
    time.sleep(2.1)  # past the first token's expiry
    seen: list[str] = []
    barrier = threading.Barrier(24)

    def worker() -> None:
        barrier.wait()
        seen.append(str(get_item(channel, "b")["token_id"]))

    threads = [threading.Thread(target=worker) for _ in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 24 and len(set(seen)) == 1 and set(seen) != first
    assert counter.calls["ExchangeApiKey"] == 2  # one refresh for 24 threads


def test_many_threads_share_one_exchange(
    tenant: Tenant, counted: tuple[grpc.Channel, Counting], offline: grpc.Channel
) -> None:
    identity, counter = counted
    created = tenant.key("inventory:read")
    tokens = TokenSource(identity, created.api_key, key_id=created.key.id, scopes=["inventory:read"])
    channel = bearer_channel(offline, tokens)
    barrier = threading.Barrier(32)
    errors: list[BaseException] = []

    def worker() -> None:
        barrier.wait()
        try:
            for _ in range(5):
                get_item(channel, "x")
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert counter.calls == Counter({"ExchangeApiKeyWithId": 1})  # v3, because a key id was given


def test_a_bad_key_fails_the_call_with_the_exchange_error(harness: Harness, offline: grpc.Channel) -> None:
    channel = bearer_channel(offline, TokenSource(harness.channel, "idk_live_nonsense"))
    expect_error(lambda: get_item(channel, "x"), UNAUTHENTICATED, "INVALID_API_KEY")


# --- mode (b): AuthorizationService.Check ----------------------------------------------------------


def test_check_mode_accepts_keys_and_tokens(harness: Harness, tenant: Tenant, checking: grpc.Channel) -> None:
    created = tenant.key("inventory:read")
    reply = call(checking, GET, metadata=(("x-api-key", created.api_key),))
    assert reply["principal_id"] == tenant.principal_id and reply["key_id"] == created.key.id
    assert reply["token_id"] == ""
    channel = bearer_channel(checking, TokenSource(harness.channel, created.api_key))
    assert get_item(channel, "w")["org_id"] == tenant.org_id
    assert len(watch(channel)) == 3
    expect_error(lambda: call(channel, PUT), PERMISSION_DENIED, "INSUFFICIENT_SCOPE")
    expect_error(lambda: call(checking, GET), UNAUTHENTICATED, "MISSING_AUTHORIZATION")
    expect_error(
        lambda: call(checking, GET, metadata=(("x-api-key", "idk_live_nonsense"),)),
        UNAUTHENTICATED,
        "INVALID_API_KEY",
    )


def test_check_mode_sees_a_revocation_at_once(
    harness: Harness, tenant: Tenant, checking: grpc.Channel
) -> None:
    created = tenant.key("inventory:read")
    token = exchanged(tenant, created.api_key)
    bearer = (("authorization", f"Bearer {token}"),)
    assert call(checking, GET, metadata=bearer)["item"] == "widget"
    tenant.platform.keys.RevokeKey(
        key_service_pb2.RevokeKeyRequest(key_id=created.key.id, reason="test"),
        metadata=tenant.platform.metadata,
    )
    expect_error(lambda: call(checking, GET, metadata=bearer), UNAUTHENTICATED, "INVALID_TOKEN")
    expect_error(
        lambda: call(checking, GET, metadata=(("x-api-key", created.api_key),)),
        UNAUTHENTICATED,
        "REVOKED_API_KEY",
    )


def test_check_mode_fails_closed_when_identity_is_down(tenant: Tenant) -> None:
    with grpc.insecure_channel("127.0.0.1:1") as nowhere:
        server, port = inventory.serve(nowhere, check=True)
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as raw:
                metadata = (("x-api-key", tenant.key("inventory:read").api_key),)
                expect_error(
                    lambda: call(raw, GET, metadata=metadata), grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE"
                )
        finally:
            server.stop(0)


# --- grpc.aio variants ------------------------------------------------------------------------------


async def aio_scenario(harness: Harness, api_key: str, check: bool) -> tuple[Counter[str], list[Any]]:
    """Run the aio service and client: 20 concurrent calls, a stream, a denial and a missing credential."""
    counter = AioCounting()
    async with grpc.aio.insecure_channel(harness.address) as identity:
        server, port = await aio_inventory.serve(identity, check=check)
        try:
            async with grpc.aio.insecure_channel(harness.address, interceptors=[counter]) as token_channel:
                tokens = AsyncTokenSource(token_channel, api_key, lifetime=timedelta(seconds=60))
                target = f"127.0.0.1:{port}"
                async with (
                    aio_bearer_channel(target, tokens) as channel,
                    grpc.aio.insecure_channel(target) as bare,
                ):
                    results = await asyncio.gather(*(aio_call(channel, GET, f"i{n}") for n in range(20)))
                    streamed = [
                        r
                        async for r in channel.unary_stream(
                            WATCH, StringValue.SerializeToString, Struct.FromString
                        )(StringValue(value="s"))
                    ]
                    outcomes: list[Any] = [results, streamed]
                    for method, chan in ((PUT, channel), (GET, bare)):
                        try:
                            await aio_call(chan, method, "denied")
                        except grpc.aio.AioRpcError as error:
                            outcomes.append(error)
                    return counter.calls, outcomes
        finally:
            await server.stop(0)


async def aio_call(channel: grpc.aio.Channel, method: str, item: str) -> Struct:
    reply: Struct = await channel.unary_unary(method, StringValue.SerializeToString, Struct.FromString)(
        StringValue(value=item), timeout=5
    )
    return reply


@pytest.mark.parametrize("check", [False, True], ids=["offline", "check"])
def test_aio_service_and_channel(harness: Harness, tenant: Tenant, check: bool) -> None:
    api_key = tenant.key("inventory:read").api_key
    counter, (results, streamed, denied, missing) = asyncio.run(aio_scenario(harness, api_key, check))
    assert counter["ExchangeApiKey"] == 1  # 20 concurrent calls, one exchange
    assert sorted(r["item"] for r in results) == sorted(f"i{n}" for n in range(20))
    assert {r["principal_id"] for r in results} == {tenant.principal_id}
    assert [r["item"] for r in streamed] == ["s-0", "s-1", "s-2"]
    assert (details_of(denied).code, details_of(denied).reason) == (PERMISSION_DENIED, "INSUFFICIENT_SCOPE")
    assert (details_of(missing).code, details_of(missing).reason) == (
        UNAUTHENTICATED,
        "MISSING_AUTHORIZATION",
    )
    assert details_of(missing).domain == "identity" and details_of(missing).error_infos == 1
