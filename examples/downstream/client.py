"""Call the inventory service through a channel that exchanges and refreshes tokens by itself.

IDENTITY_API_KEY=idk_live_... python -m examples.downstream.client --item widget
"""

from __future__ import annotations

import argparse
import os

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.struct_pb2 import Struct
from google.protobuf.wrappers_pb2 import StringValue

from examples.downstream.inventory import SERVICE
from identity.client import TokenSource, bearer_channel


def get_item(channel: grpc.Channel, item: str) -> Struct:
    """Call ``GetItem`` on ``channel``."""
    call = channel.unary_unary(
        f"/{SERVICE}/GetItem",
        request_serializer=StringValue.SerializeToString,
        response_deserializer=Struct.FromString,
    )
    reply: Struct = call(StringValue(value=item), timeout=5)
    return reply


def main() -> None:
    """Fetch one item as the key in ``IDENTITY_API_KEY`` (never read from argv)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--identity", default="localhost:50051")
    parser.add_argument("--inventory", default="localhost:50052")
    parser.add_argument("--item", default="widget")
    args = parser.parse_args()
    with grpc.insecure_channel(args.identity) as identity, grpc.insecure_channel(args.inventory) as raw:
        tokens = TokenSource(identity, os.environ["IDENTITY_API_KEY"], scopes=["inventory:read"])
        print(MessageToDict(get_item(bearer_channel(raw, tokens), args.item)))


if __name__ == "__main__":
    main()
