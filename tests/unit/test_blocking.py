"""The event loop's thread never waits: places that would raise WouldBlock there, and a try leaves no trace."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from identity.blocking import WouldBlock, after_try, attempt, may_block
from identity.cache.lookups import Lookups
from identity.crypto.hashing import Argon2Profile, SecretHasher
from identity.crypto.pool import BoundedHasher
from identity.store.database import Database
from tests.helpers import on_forbidden_thread


def test_may_block_is_silent_on_ordinary_threads_and_raises_where_forbidden() -> None:
    may_block()
    assert isinstance(on_forbidden_thread(may_block), WouldBlock)


def test_would_block_passes_every_except_exception() -> None:
    def careless() -> str:
        try:
            may_block()
        except Exception:  # what a handler's own error mapping does
            return "swallowed"
        return "went on"

    assert isinstance(on_forbidden_thread(careless), WouldBlock)


def test_a_database_session_would_block_before_it_takes_a_connection(tmp_path: Any) -> None:
    db = Database(f"sqlite:///{tmp_path}/blocking.db")
    try:

        def read() -> None:
            with db.read():
                pass

        assert isinstance(on_forbidden_thread(read), WouldBlock)
        assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
        read()  # elsewhere it reads
    finally:
        db.dispose()


def test_argon2_work_would_block_before_it_is_admitted() -> None:
    hasher = BoundedHasher(SecretHasher(Argon2Profile(memory_kib=8, time_cost=1, parallelism=1)), 1, 0)
    try:
        encoded = hasher.hash("a secret")
        assert isinstance(on_forbidden_thread(lambda: hasher.verify(encoded, "a secret")), WouldBlock)
        assert (hasher.in_use, hasher.refused) == (0, 0)
        assert hasher.verify(encoded, "a secret")
    finally:
        hasher.shutdown()


def test_after_try_effects_wait_for_the_attempt_and_are_dropped_if_it_would_block() -> None:
    done: list[str] = []

    def finishes() -> str:
        after_try(done.append, "finished")
        assert done == []  # held until the attempt ends
        return "answer"

    def refuses() -> None:
        after_try(done.append, "refused")
        raise ValueError("a refusal is an end too")

    def waits() -> None:
        after_try(done.append, "would block")
        may_block()

    def tried(work: Callable[[], Any]) -> Any:
        return on_forbidden_thread(lambda: attempt(work))

    assert tried(finishes) == "answer"
    assert isinstance(tried(refuses), ValueError)
    assert isinstance(tried(waits), WouldBlock)
    assert done == ["finished", "refused"]
    after_try(done.append, "now")  # outside an attempt: at once
    assert done[-1] == "now"


def test_lookups_of_a_try_that_would_block_are_not_counted() -> None:
    lookups = Lookups()

    def cold() -> None:
        lookups.count(False)
        may_block()

    assert isinstance(on_forbidden_thread(lambda: attempt(cold)), WouldBlock)
    assert (lookups.hits, lookups.misses) == (0, 0)
    on_forbidden_thread(lambda: attempt(lookups.count, True))
    lookups.count(False)
    assert (lookups.hits, lookups.misses) == (1, 1)
