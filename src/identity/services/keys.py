"""KeyService."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc

from identity.app.common import utcnow
from identity.app.keys import Keys, KeySpec
from identity.changefeed import ChangeFeed
from identity.domain.model import KeyKind
from identity.services.convert import (
    KEY_EVENT_TYPES,
    KEY_KINDS,
    KEY_STATES,
    from_proto_enum,
    key_message,
    resource_refs,
    timestamp,
    to_datetime,
    to_timedelta,
)
from identity.services.interceptor import current_request
from identity.services.masks import mask_paths
from identity.v1 import key_service_pb2 as pb
from identity.v1 import key_service_pb2_grpc as pb_grpc

# How often a stream looks at the log even when the change feed reports nothing (a safety net).
WATCH_POLL_SECONDS = 1.0


class KeyServicer(pb_grpc.KeyServiceServicer):
    """Serves KeyService over the Keys use cases."""

    def __init__(self, keys: Keys, feed: ChangeFeed) -> None:
        """Serve ``keys``; watch streams follow ``feed`` and end when it stops."""
        self._keys = keys
        self._feed = feed

    def CreateKey(self, request: pb.CreateKeyRequest, context: grpc.ServicerContext) -> pb.CreateKeyResponse:
        """Create a key and return its plaintext once."""
        kind = (
            KeyKind.SECRET
            if request.kind == pb.KEY_KIND_UNSPECIFIED
            else from_proto_enum(KEY_KINDS, request.kind)
        )
        spec = KeySpec(
            org_id=request.org_id,
            principal_id=request.principal_id,
            display_name=request.display_name,
            description=request.description,
            kind=kind,
            environment=request.environment or "live",
            scopes=tuple(request.scopes),
            resources=resource_refs(request.resources),
            allowed_cidrs=tuple(request.allowed_cidrs),
            expire_time=to_datetime(request.expire_time, "expire_time")
            if request.HasField("expire_time")
            else None,
            ttl_days=request.ttl_days,
            require_key_id=request.require_key_id,
            request_id=request.request_id,
        )
        issued = self._keys.create(current_request(), spec)
        return pb.CreateKeyResponse(key=key_message(issued.key, utcnow()), api_key=issued.api_key)

    def GetKey(self, request: pb.GetKeyRequest, context: grpc.ServicerContext) -> pb.GetKeyResponse:
        """Return one key."""
        return pb.GetKeyResponse(key=key_message(self._keys.get(current_request(), request.id), utcnow()))

    def ListKeys(self, request: pb.ListKeysRequest, context: grpc.ServicerContext) -> pb.ListKeysResponse:
        """List an organization's keys."""
        keys, token = self._keys.list_page(
            current_request(),
            request.org_id,
            request.principal_id,
            from_proto_enum(KEY_STATES, request.state),
            request.page_size,
            request.page_token,
        )
        now = utcnow()
        return pb.ListKeysResponse(keys=[key_message(k, now) for k in keys], next_page_token=token)

    def UpdateKey(self, request: pb.UpdateKeyRequest, context: grpc.ServicerContext) -> pb.UpdateKeyResponse:
        """Apply a masked update."""
        paths = mask_paths(
            request.update_mask, {"display_name", "description", "scopes", "resources", "allowed_cidrs"}
        )
        message = request.key
        values: dict[str, Any] = {
            "display_name": message.display_name,
            "description": message.description,
            "scopes": tuple(message.scopes),
            "resources": resource_refs(message.resources),
            "allowed_cidrs": tuple(message.allowed_cidrs),
        }
        key = self._keys.update(current_request(), message.id, {p: values[p] for p in paths})
        return pb.UpdateKeyResponse(key=key_message(key, utcnow()))

    def RotateKey(self, request: pb.RotateKeyRequest, context: grpc.ServicerContext) -> pb.RotateKeyResponse:
        """Give a key a new secret."""
        issued = self._keys.rotate(
            current_request(), request.key_id, to_timedelta(request.grace_period, "grace_period")
        )
        return pb.RotateKeyResponse(key=key_message(issued.key, utcnow()), api_key=issued.api_key)

    def RevokeKey(self, request: pb.RevokeKeyRequest, context: grpc.ServicerContext) -> pb.RevokeKeyResponse:
        """Revoke a key."""
        key = self._keys.revoke(current_request(), request.key_id, request.reason)
        return pb.RevokeKeyResponse(key=key_message(key, utcnow()))

    def DeleteKey(self, request: pb.DeleteKeyRequest, context: grpc.ServicerContext) -> pb.DeleteKeyResponse:
        """Delete a key."""
        key = self._keys.delete(current_request(), request.key_id)
        return pb.DeleteKeyResponse(key=key_message(key, utcnow()))

    def ListExpiringKeys(
        self, request: pb.ListExpiringKeysRequest, context: grpc.ServicerContext
    ) -> pb.ListExpiringKeysResponse:
        """List active keys expiring soon."""
        keys, token = self._keys.expiring(
            current_request(),
            request.org_id,
            to_timedelta(request.within, "within"),
            request.page_size,
            request.page_token,
        )
        now = utcnow()
        return pb.ListExpiringKeysResponse(keys=[key_message(k, now) for k in keys], next_page_token=token)

    def WatchKeyEvents(
        self, request: pb.WatchKeyEventsRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.WatchKeyEventsResponse]:
        """Stream key changes after the cursor, reading the log again whenever the change feed moves."""
        self._keys.check_watch(current_request(), request.org_id, request.after_cursor)
        cursor = request.after_cursor
        while context.is_active() and not self._feed.stopped:
            seen = self._feed.cursor  # before the read: a change landing during it wakes the wait below
            events = self._keys.changes_after(request.org_id, cursor)
            now = utcnow()
            for event in events:
                cursor = event.cursor
                yield pb.WatchKeyEventsResponse(
                    event=pb.KeyEvent(
                        cursor=event.cursor,
                        type=KEY_EVENT_TYPES[event.type],
                        key=key_message(event.key, now),
                        time=timestamp(event.time),
                    )
                )
            if not events:
                self._feed.wait_beyond(seen, WATCH_POLL_SECONDS)
