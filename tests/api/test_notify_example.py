"""The documented way to turn key events into notifications works and resumes where it stopped."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from examples.notify.key_events import follow
from identity.v1 import key_service_pb2
from tests.conftest import Harness


def test_key_events_become_notifications_and_resume_from_the_cursor(harness: Harness, tmp_path: Path) -> None:
    admin = harness.admin()
    org_id, account, tenant_key = admin.tenant_admin()
    cursor_file = tmp_path / "cursor"
    seen: list[dict[str, Any]] = []

    def watch(limit: int) -> threading.Thread:
        thread = threading.Thread(
            target=follow, args=(harness.channel, tenant_key, org_id, cursor_file, seen.append, limit)
        )
        thread.start()
        return thread

    first = watch(limit=2)  # the tenant's own admin key, then the key made below
    created = admin.create_key(org_id, account, ["stock:read"], display_name="notified").key
    first.join(timeout=10)
    assert [(e["type"], e["key"]["id"]) for e in seen][-1] == ("CREATED", created.id)
    assert "api_key" not in str(seen)

    admin.keys.RevokeKey(
        key_service_pb2.RevokeKeyRequest(key_id=created.id, reason="rotated out"), metadata=admin.metadata
    )
    second = watch(limit=1)  # a restart: only what came after the saved cursor
    second.join(timeout=10)
    assert [(e["type"], e["key"]["id"]) for e in seen[2:]] == [("REVOKED", created.id)]
    assert seen[2]["key"]["revoke_reason"] == "rotated out"
