"""The inventory service on grpcio, protected by ``identity.client.AuthInterceptor``.

Run it next to an identity server::

    python -m examples.downstream.inventory --identity localhost:50051 --listen 127.0.0.1:50052
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
from google.protobuf.struct_pb2 import Struct
from google.protobuf.wrappers_pb2 import StringValue

from identity.client import AuthInterceptor, CheckAuthorizer, OfflineAuthorizer, current_identity

SERVICE = "inventory.v1.Inventory"
PERMISSIONS = {
    f"/{SERVICE}/GetItem": "inventory:read",
    f"/{SERVICE}/WatchItems": "inventory:read",
    f"/{SERVICE}/PutItem": "inventory:write",
}


def describe(item: str) -> Struct:
    """An item as the caller sees it: its name and who asked."""
    caller = current_identity()
    reply = Struct()
    reply.update(
        {
            "item": item,
            "principal_id": caller.principal_id,
            "org_id": caller.org_id,
            "key_id": caller.key_id,
            "token_id": caller.token_id,
            "scopes": list(caller.scopes),
        }
    )
    return reply


def get_item(request: StringValue, context: grpc.ServicerContext) -> Struct:
    """One item by name."""
    return describe(request.value)


def watch_items(request: StringValue, context: grpc.ServicerContext) -> Iterator[Struct]:
    """Three items whose names start with the request."""
    for n in range(3):
        yield describe(f"{request.value}-{n}")


def put_item(request: StringValue, context: grpc.ServicerContext) -> Struct:
    """Store an item (this sample only echoes it)."""
    return describe(request.value)


def _unary(behavior: object) -> grpc.RpcMethodHandler:
    return grpc.unary_unary_rpc_method_handler(
        behavior, request_deserializer=StringValue.FromString, response_serializer=Struct.SerializeToString
    )


HANDLERS = grpc.method_handlers_generic_handler(
    SERVICE,
    {
        "GetItem": _unary(get_item),
        "PutItem": _unary(put_item),
        "WatchItems": grpc.unary_stream_rpc_method_handler(
            watch_items,
            request_deserializer=StringValue.FromString,
            response_serializer=Struct.SerializeToString,
        ),
    },
)


def serve(
    identity: grpc.Channel, listen: str = "127.0.0.1:0", *, check: bool = False
) -> tuple[grpc.Server, int]:
    """Start the inventory service on ``listen``, judging callers offline or with Check."""
    authorizer = CheckAuthorizer(identity) if check else OfflineAuthorizer(identity)
    server = grpc.server(ThreadPoolExecutor(16), interceptors=[AuthInterceptor(authorizer, PERMISSIONS)])
    server.add_generic_rpc_handlers([HANDLERS])
    port = server.add_insecure_port(listen)
    server.start()
    return server, port


def main() -> None:
    """Serve until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--identity", default="localhost:50051", help="the identity service")
    parser.add_argument("--listen", default="127.0.0.1:50052")
    parser.add_argument("--check", action="store_true", help="ask Check instead of verifying offline")
    args = parser.parse_args()
    with grpc.insecure_channel(args.identity) as identity:
        server, port = serve(identity, args.listen, check=args.check)
        print(f"inventory listening on port {port}")
        server.wait_for_termination()


if __name__ == "__main__":
    main()
