"""The hot path's building blocks: bounded maps, the key-state cache's guard and freshness,
remembered allows, fingerprints and throttles."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Hashable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from identity.authz import version_current
from identity.cache.allows import AllowMemo
from identity.cache.bounded import BoundedCache
from identity.cache.states import MAX_NOTES, KeyStateCache, LiveKey
from identity.cache.verified import VerifiedCredentials
from identity.domain.decisions import Decision
from identity.domain.errors import Reason
from identity.domain.model import (
    Change,
    ChangeSubject,
    Key,
    KeyKind,
    KeyPolicy,
    Organization,
    OrganizationState,
    Origin,
    Principal,
    PrincipalKind,
    PrincipalState,
)
from identity.throttle import AttemptThrottle, FailureBuckets

NOW = datetime(2026, 11, 24, tzinfo=UTC)


def live_key(key_id: str = "key_1", version: int = 1) -> LiveKey:
    key = Key(
        key_id, "org_1", "sa_1", "k", "", KeyKind.SECRET, "live", "idk_live_x", "abcd",
        ("stock:read",), (), (), False, NOW, NOW, None, "sa_0",
    )  # fmt: skip
    org = Organization("org_1", "Org", OrganizationState.ACTIVE, KeyPolicy(), NOW, NOW)
    principal = Principal(
        "sa_1", "org_1", PrincipalKind.SERVICE_ACCOUNT, "p", PrincipalState.ACTIVE, NOW, NOW
    )
    return LiveKey(key, version, org, principal)


def fresh_cache() -> KeyStateCache:
    cache = KeyStateCache(max_entries=10)
    cache.reset({}, time.monotonic(), 0)
    return cache


def test_bounded_cache_evicts_the_least_recently_used_and_the_expired() -> None:
    cache: BoundedCache[str, int] = BoundedCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # a is now the most recent
    cache.put("c", 3)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (1, None, 3)
    assert cache.get_beside_writers("a") == 1  # the lookup without the owner's lock is a use too
    cache.put("d", 4, deadline=time.monotonic() - 1)
    assert cache.get("d") is None and len(cache) == 1 and cache.get("a") == 1  # d pushed c out, then expired
    disabled: BoundedCache[str, int] = BoundedCache(0)
    disabled.put("a", 1)
    assert disabled.get("a") is None


def test_a_lookup_beside_writers_never_fails_nor_finds_a_wrong_value_while_others_evict() -> None:
    busy: BoundedCache[str, int] = BoundedCache(8)
    keys = [str(n) for n in range(32)]
    found: list[tuple[str, int]] = []
    writing = threading.Event()

    def write() -> None:
        writing.set()
        for _ in range(2_000):
            for key in keys:
                busy.put(key, int(key))  # every put past the eighth evicts

    writer = threading.Thread(target=write)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible, mid-lookup included
    try:
        writer.start()
        writing.wait()
        while writer.is_alive():
            for key in keys:
                value = busy.get_beside_writers(key)
                if value is not None:
                    found.append((key, value))
    finally:
        writer.join()
        sys.setswitchinterval(interval)
    assert found and all(value == int(key) for key, value in found)


def test_key_state_cache_drops_a_fill_that_raced_an_invalidation() -> None:
    cache = fresh_cache()
    before_read = cache.generation
    cache.apply([Change(7, ChangeSubject.KEY, "key_1")], time.monotonic())  # a revocation lands
    cache.put(before_read, live_key())  # what was read before it
    assert cache.get("key_1") is None
    cache.put(cache.generation, live_key())
    assert cache.get("key_1") == live_key()


@pytest.mark.parametrize(
    "change",
    [
        Change(1, ChangeSubject.KEY, "key_1"),
        Change(1, ChangeSubject.ORGANIZATION, "org_1"),
        Change(1, ChangeSubject.PRINCIPAL, "sa_1"),
    ],
    ids=["key", "organization", "principal"],
)
def test_any_change_a_key_depends_on_drops_it(change: Change) -> None:
    cache = fresh_cache()
    cache.put(cache.generation, live_key())
    cache.apply([change], time.monotonic())
    assert cache.get("key_1") is None


def test_key_state_cache_answers_only_while_fresh() -> None:
    cache = KeyStateCache(max_entries=10, freshness_seconds=0.05)
    cache.put(cache.generation, live_key())
    assert cache.get("key_1") is None and cache.token_revoked("tok_1") is None  # never caught up
    cache.apply([], time.monotonic())
    cache.put(cache.generation, live_key())
    assert cache.get("key_1") is not None and cache.token_revoked("tok_1") is False
    time.sleep(0.06)
    assert cache.get("key_1") is None and cache.token_revoked("tok_1") is None
    cache.apply([], time.monotonic())
    cache.distrust()  # the log could not be read: stop at once, not a second later
    assert cache.get("key_1") is None and not cache.fresh()
    # A catch-up that did not reach the end of the log does not make it fresh.
    cache.apply([Change(3, ChangeSubject.PRINCIPAL, "sa_9")], None)
    assert not cache.fresh()


def _allow_remembered_by_a_fresh_cache() -> tuple[KeyStateCache, AllowMemo[Decision], Hashable]:
    # A cache that goes stale 50 ms after its catch-up, and an allow remembered under it.
    states = KeyStateCache(max_entries=10, freshness_seconds=0.05)
    memo: AllowMemo[Decision] = AllowMemo(states, VerifiedCredentials(10).fingerprint)
    states.apply([], time.monotonic())
    key = memo.key("idk_live_secret", ("stock:read",), None, "")
    memo.put(key, Decision(True, Reason.ALLOWED, "allowed", key_id="key_1"), memo.generation, None)
    return states, memo, key


REVOKED = Change(1, ChangeSubject.KEY, "key_1")  # the change a stale read sees before the cache


def test_a_catch_up_short_of_what_a_stale_read_saw_does_not_make_the_cache_fresh() -> None:
    """The race of the replica tests: stale, a call read a change from the database and said no;
    a catch-up begun before that change must not bring back the allow remembered before it."""
    states, memo, key = _allow_remembered_by_a_fresh_cache()
    time.sleep(0.06)  # the change feed falls behind: nothing answers from memory
    began = time.monotonic()  # a call misses the cache and reads the database, change included
    assert states.read_may_be_ahead(began)
    states.note_read_ahead(REVOKED.cursor)  # the log's head after that read
    states.apply([], time.monotonic())  # a catch-up that read the log before the change
    assert not states.fresh() and memo.get(key, NOW.timestamp()) is None
    states.apply([REVOKED], time.monotonic())  # the next one reads the change
    assert states.fresh() and memo.get(key, NOW.timestamp()) is None  # and it forgot the allow


def test_a_catch_up_that_renewed_the_cache_during_a_stale_read_is_undone() -> None:
    """The same race, the other way round: the catch-up that began too early ends while the call
    still reads. The cache was fresh again when the read ended; the read takes that back."""
    states, memo, key = _allow_remembered_by_a_fresh_cache()
    time.sleep(0.06)  # stale: nothing answers from memory
    began = time.monotonic()  # a call misses the cache, then reads, change included
    states.apply([], time.monotonic())  # a catch-up from before the change ends
    assert states.fresh() and states.read_may_be_ahead(began)
    states.note_read_ahead(REVOKED.cursor)
    assert not states.fresh() and memo.get(key, NOW.timestamp()) is None
    states.apply([REVOKED], time.monotonic())
    assert states.fresh()


def test_a_stale_read_that_saw_nothing_new_holds_back_no_catch_up() -> None:
    """Under load a stale cache is read past all the time: a read that saw no change the cache
    lacks must not keep it stale, or it would never answer again while the load lasts."""
    states = fresh_cache()
    states.apply([REVOKED], time.monotonic())
    states.distrust()  # a hiccup
    catch_up_began = time.monotonic()
    began = time.monotonic()  # a read begins and ends while that catch-up runs
    assert states.read_may_be_ahead(began)
    states.note_read_ahead(REVOKED.cursor)  # the head the cache has applied already
    states.apply([], catch_up_began)
    assert states.fresh()


def test_a_read_while_fresh_is_not_ahead() -> None:
    states = fresh_cache()
    assert not states.read_may_be_ahead(time.monotonic())  # nothing it hides: allows answer within the bound


def _deactivated(live: LiveKey) -> LiveKey:
    return replace(live, organization=replace(live.organization, state=OrganizationState.INACTIVE))


@pytest.mark.parametrize(
    "newer_first", [False, True], ids=["older_read_stored_first", "newer_read_stored_first"]
)
def test_two_fills_that_straddle_a_change_forget_what_was_judged_at_their_generation(
    newer_first: bool,
) -> None:
    """The replica tests' other deny-then-allow: the key was just dropped (its own creation was
    applied), two calls miss it at once and read, and the organization's deactivation commits
    between their reads. The earlier read allowed and remembered it; the later one refused."""
    states, memo, key = _allow_remembered_by_a_fresh_cache()
    generation = states.generation
    fills = [live_key(), _deactivated(live_key())]
    for fill in reversed(fills) if newer_first else fills:
        states.put(generation, fill)
    assert states.generation != generation and memo.get(key, NOW.timestamp()) is None
    assert states.get("key_1") is None  # neither is kept: the next call reads again
    states.put(states.generation, _deactivated(live_key()))
    assert states.get("key_1") == _deactivated(live_key())


@pytest.mark.parametrize("deleted_first", [False, True], ids=["fill_stored_first", "deletion_seen_first"])
@pytest.mark.parametrize("by_lookup", [False, True], ids=["by_key_id", "by_lookup_handle"])
def test_a_fill_and_a_read_that_found_the_key_deleted_forget_what_was_judged_at_their_generation(
    deleted_first: bool, by_lookup: bool
) -> None:
    """As above, with a deletion: the later read found no key at all, so it has nothing to store.

    A read by lookup handle (an API key not verified before) that finds nothing has no key id
    to name: the handle stands for the key the other read found under it."""
    states, memo, key = _allow_remembered_by_a_fresh_cache()
    generation = states.generation
    if by_lookup:
        steps = [
            lambda: states.put(generation, live_key(), "x"),
            lambda: states.put_absent(generation, lookup="x"),
        ]
    else:
        steps = [lambda: states.put(generation, live_key()), lambda: states.put_absent(generation, "key_1")]
    for step in reversed(steps) if deleted_first else steps:
        step()
    assert states.generation != generation and memo.get(key, NOW.timestamp()) is None
    assert states.get("key_1") is None


def test_a_read_that_found_an_unknown_key_forgets_nothing() -> None:
    states, memo, key = _allow_remembered_by_a_fresh_cache()
    generation = states.generation
    states.put(generation, live_key(), "x")
    states.put_absent(generation, "key_gone")
    states.put_absent(generation, lookup="unknown")  # a made-up API key
    states.put(generation, live_key(), "x")  # a wrong secret for a real lookup handle, found again
    assert states.generation == generation and memo.get(key, NOW.timestamp()) is not None
    assert states.get("key_1") is not None


def test_notes_of_reads_are_bounded() -> None:
    """A flood of made-up API keys leaves a note per lookup handle: past the bound, the
    generation moves on and forgets them, rather than memory growing without end."""
    states = fresh_cache()
    generation = states.generation
    for number in range(MAX_NOTES - 1):
        states.put_absent(generation, lookup=f"made-up-{number}")
    assert states.generation == generation
    states.put_absent(generation, lookup="one-more")
    assert states.generation != generation
    states.put(states.generation, live_key(), "one-more")  # noted at the old generation only
    assert states.get("key_1") is not None


def test_fills_that_agree_forget_nothing() -> None:
    """Fills of other keys of one organization store it again and again; a use recorded between
    two reads of a key is no change. Neither may cost the remembered allows."""
    states, memo, key = _allow_remembered_by_a_fresh_cache()
    generation = states.generation
    states.put(generation, live_key())
    used = live_key()
    states.put(generation, replace(used, key=replace(used.key, last_used_time=NOW)))
    assert states.generation == generation and memo.get(key, NOW.timestamp()) is not None
    assert states.get("key_1") is not None


def test_revoked_tokens_are_remembered_until_they_expire() -> None:
    cache = fresh_cache()
    later = datetime.now(UTC) + timedelta(minutes=5)
    cache.apply([Change(1, ChangeSubject.TOKEN, "tok_1", later)], time.monotonic())
    assert cache.token_revoked("tok_1") is True and cache.token_revoked("tok_2") is False
    gone = datetime.now(UTC) - timedelta(seconds=1)
    cache.apply([Change(2, ChangeSubject.TOKEN, "tok_2", gone)], time.monotonic())
    assert cache.token_revoked("tok_2") is False  # expired anyway: nothing left to refuse


def test_remembered_allows_hold_only_while_nothing_changed_and_time_allows() -> None:
    states = fresh_cache()
    memo: AllowMemo[Decision] = AllowMemo(states, VerifiedCredentials(10).fingerprint)
    allow = Decision(True, Reason.ALLOWED, "allowed", key_id="key_1")
    key = memo.key("idk_live_secret", ("stock:read",), None, "")
    assert key == memo.key("idk_live_secret", ("stock:read",), None, "")
    assert key != memo.key("idk_live_other", ("stock:read",), None, "")
    memo.put(key, allow, memo.generation, (NOW + timedelta(minutes=1)).timestamp())
    assert memo.get(key, NOW.timestamp()) is allow
    assert memo.get(key, (NOW + timedelta(minutes=1)).timestamp()) is None  # the credential's time ran out
    states.apply([Change(1, ChangeSubject.PRINCIPAL, "sa_9")], time.monotonic())
    assert memo.get(key, NOW.timestamp()) is None  # anything changed: judge again
    stale = states.generation
    states.apply([Change(2, ChangeSubject.KEY, "key_9")], time.monotonic())
    memo.put(key, allow, stale, None)
    assert memo.get(key, NOW.timestamp()) is None


def test_fingerprints_are_keyed_per_process_and_hide_the_secret() -> None:
    one, two = VerifiedCredentials(10), VerifiedCredentials(10)
    secret = "idk_live_AAAAAAAAAAAAAAAA_secret"
    assert one.fingerprint(secret) == one.fingerprint(secret) != two.fingerprint(secret)
    assert secret.encode() not in one.fingerprint(secret) and len(one.fingerprint(secret)) == 32


def test_a_secret_version_works_while_current_or_in_its_grace() -> None:
    assert version_current(3, 3, None, NOW)
    assert version_current(2, 3, NOW + timedelta(seconds=1), NOW)
    assert not version_current(2, 3, NOW, NOW)
    assert not version_current(2, 3, None, NOW)
    assert not version_current(1, 3, NOW + timedelta(days=1), NOW)


def test_failure_buckets_refill_over_time(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    buckets = FailureBuckets(per_minute=3)
    for _ in range(3):
        assert not buckets.empty("h")
        buckets.spend("h")
    assert buckets.empty("h") and not buckets.empty("other")
    clock[0] += 20  # a third of a minute returns one failure's worth
    assert not buckets.empty("h")
    buckets.spend("h")
    assert buckets.empty("h")


def test_attempt_throttle_refuses_a_handle_or_a_peer_that_failed_too_often() -> None:
    throttle = AttemptThrottle(per_handle=2, per_peer=3)
    throttle.failed("handle", "10.0.0.1")
    throttle.failed("handle", "10.0.0.1")
    with pytest.raises(Exception, match="too many failed attempts"):
        throttle.check("handle", Origin(client_ip="10.0.0.2"))
    throttle.check("other", Origin(client_ip="10.0.0.2"))
    throttle.failed("other", "10.0.0.1")
    with pytest.raises(Exception, match="too many failed attempts"):
        throttle.check("third", Origin(client_ip="10.0.0.1"))


def test_origin_reads_each_part_once_and_only_when_asked() -> None:
    asked: list[str] = []

    def peer() -> str:
        asked.append("peer")
        return "ipv4:10.0.0.1:5000"

    origin = Origin(peer=peer, client_ip="10.0.0.1")
    assert asked == [] and origin.client_ip == "10.0.0.1" and asked == []
    assert origin.peer == origin.peer == "ipv4:10.0.0.1:5000" and asked == ["peer"]
