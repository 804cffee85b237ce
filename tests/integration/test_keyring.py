"""The signing keyring: a stale one is refreshed off the request path, and sees other replicas' rotations."""

from __future__ import annotations

import secrets
import time

import pytest

from identity import keyring as keyring_module
from identity.blocking import WouldBlock
from identity.crypto.signing import SigningKey
from identity.keyring import Keyring
from identity.store.database import Database
from tests.helpers import on_forbidden_thread

KEK = secrets.token_bytes(32)


def test_a_stale_keyring_signs_on_and_picks_up_another_replicas_rotation(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    here, there = Keyring(db, KEK, "ES256"), Keyring(db, KEK, "ES256")
    first = here.current()
    assert there.current().kid == first.kid

    rotated = there.rotate("EdDSA")
    monkeypatch.setattr(keyring_module, "KEYRING_REFRESH_SECONDS", 0.0)

    # Stale now, yet the key in hand is served at once, without touching the database.
    served = on_forbidden_thread(here.current)
    assert isinstance(served, SigningKey) and served.kid == first.kid
    deadline = time.monotonic() + 5
    while here.current().kid != rotated.kid:
        assert time.monotonic() < deadline, "the rotation on the other replica was never seen"
        time.sleep(0.01)
    assert here.current().algorithm == "EdDSA"
    assert here.find(first.kid) is not None  # the old key stays published for its tokens


def test_a_keyring_with_no_key_yet_reads_the_database_first(db: Database) -> None:
    made = Keyring(db, KEK, "ES256").current()
    fresh = Keyring(db, KEK, "ES256")

    # Nothing in hand: on the loop that is a wait, which the door retries on a request thread.
    assert isinstance(on_forbidden_thread(fresh.current), WouldBlock)
    assert fresh.current().kid == made.kid
