"""The inventory service on ``grpc.aio``, protected by ``identity.client.AioAuthInterceptor``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from google.protobuf.struct_pb2 import Struct
from google.protobuf.wrappers_pb2 import StringValue

from examples.downstream.inventory import PERMISSIONS, SERVICE, describe
from identity.client import AioAuthInterceptor, AioCheckAuthorizer, AioOfflineAuthorizer


async def get_item(request: StringValue, context: grpc.aio.ServicerContext) -> Struct:
    """One item by name."""
    return describe(request.value)


async def watch_items(request: StringValue, context: grpc.aio.ServicerContext) -> AsyncIterator[Struct]:
    """Three items whose names start with the request."""
    for n in range(3):
        yield describe(f"{request.value}-{n}")


def _handler(kind: str, behavior: object) -> grpc.RpcMethodHandler:
    factory = getattr(grpc, f"{kind}_rpc_method_handler")
    return factory(
        behavior, request_deserializer=StringValue.FromString, response_serializer=Struct.SerializeToString
    )


HANDLERS = grpc.method_handlers_generic_handler(
    SERVICE,
    {
        "GetItem": _handler("unary_unary", get_item),
        "PutItem": _handler("unary_unary", get_item),
        "WatchItems": _handler("unary_stream", watch_items),
    },
)


async def serve(
    identity: grpc.aio.Channel, listen: str = "127.0.0.1:0", *, check: bool = False
) -> tuple[grpc.aio.Server, int]:
    """Start the asyncio inventory service on ``listen``, judging callers offline or with Check."""
    authorizer = AioCheckAuthorizer(identity) if check else AioOfflineAuthorizer(identity)
    server = grpc.aio.server(interceptors=[AioAuthInterceptor(authorizer, PERMISSIONS)])
    server.add_generic_rpc_handlers([HANDLERS])
    port = server.add_insecure_port(listen)
    await server.start()
    return server, port
