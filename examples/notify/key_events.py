"""Turn key events into notifications: one JSON line per event, to stdout or a webhook.

Follows ``KeyService/WatchKeyEvents`` of one organization and saves the cursor of every event it
has delivered, so a restart resumes where it stopped (at-least-once: an event may be sent twice
after a crash, never lost). Pair it with a daily ``identity keys expiring --within 14d --json``
for keys about to expire.

    IDENTITY_API_KEY=idk_live_... python -m examples.notify.key_events --org org_... --cursor-file
        /var/lib/identity-notify/cursor [--webhook https://hooks.example/identity]
        [--server HOST:PORT] [--ca-file ca.pem [--cert-file client.pem --key-file client.key]]
"""

from __future__ import annotations

import argparse
import json
import os
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict

from identity.cli_client import connect, connection_options
from identity.v1 import key_service_pb2, key_service_pb2_grpc

Notify = Callable[[dict[str, Any]], None]


def follow(
    channel: grpc.Channel, api_key: str, org_id: str, cursor_file: Path, notify: Notify, limit: int = 0
) -> None:
    """Deliver every key event after the saved cursor to ``notify``, then new ones as they happen.

    Returns after ``limit`` events when ``limit`` is positive (tests); otherwise runs until the
    stream ends (the server drains, the connection drops): run it under a supervisor that restarts it.
    """
    cursor = int(cursor_file.read_text()) if cursor_file.exists() else 0
    stream = key_service_pb2_grpc.KeyServiceStub(channel).WatchKeyEvents(
        key_service_pb2.WatchKeyEventsRequest(org_id=org_id, after_cursor=cursor),
        metadata=(("authorization", f"Bearer {api_key}"),),
    )
    for delivered, reply in enumerate(stream, start=1):
        event = reply.event
        notify(
            {
                "type": key_service_pb2.KeyEventType.Name(event.type).removeprefix("KEY_EVENT_TYPE_"),
                "time": event.time.ToJsonString(),
                "key": MessageToDict(event.key, preserving_proto_field_name=True),
            }
        )
        cursor_file.write_text(str(event.cursor))  # only once delivered
        if limit and delivered >= limit:
            stream.cancel()
            return


def webhook(url: str) -> Notify:
    """A notifier that POSTs each event as JSON to ``url``."""

    def post(event: dict[str, Any]) -> None:
        request = urllib.request.Request(  # noqa: S310 - the operator's own webhook URL
            url, data=json.dumps(event).encode(), headers={"content-type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10):  # noqa: S310
            pass

    return post


def main() -> None:
    """Follow one organization's key events until the stream ends."""
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[connection_options()],
    )
    parser.add_argument("--org", required=True)
    parser.add_argument("--cursor-file", type=Path, required=True)
    parser.add_argument("--webhook", default="", help="POST events here instead of printing them")
    args = parser.parse_args()
    notify = webhook(args.webhook) if args.webhook else lambda event: print(json.dumps(event), flush=True)
    with connect(args, "localhost:50051") as channel:
        follow(channel, os.environ["IDENTITY_API_KEY"], args.org, args.cursor_file, notify)


if __name__ == "__main__":
    main()
