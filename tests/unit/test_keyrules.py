"""Key rules: expiry against the policy, publishable keys, no escalation, grace periods."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from identity.domain.errors import IdentityError, Reason
from identity.domain.keyrules import check_kind_scopes, check_no_escalation, expiry, grace_period
from identity.domain.model import Caller, KeyKind, KeyPolicy, ResourceRef

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
DEFAULT = KeyPolicy()
SHORT = KeyPolicy(max_expiry_days=30, default_expiry_days=7)
OPTIONAL = KeyPolicy(require_expiry=False)


def invalid_field(error: pytest.ExceptionInfo[IdentityError]) -> str:
    assert error.value.reason is Reason.INVALID_ARGUMENT
    (violation,) = error.value.violations
    return violation.field


# --- expiry ----------------------------------------------------------------------------------------


def test_ttl_days_sets_the_expiry() -> None:
    assert expiry(DEFAULT, NOW, None, 10) == NOW + timedelta(days=10)
    assert expiry(DEFAULT, NOW, None, 1) == NOW + timedelta(days=1)
    assert expiry(DEFAULT, NOW, None, 365) == NOW + timedelta(days=365)
    assert expiry(SHORT, NOW, None, 30) == NOW + timedelta(days=30)
    assert expiry(OPTIONAL, NOW, None, 5) == NOW + timedelta(days=5)


def test_no_ttl_takes_the_policy_default_or_none_when_expiry_is_optional() -> None:
    assert expiry(DEFAULT, NOW, None, 0) == NOW + timedelta(days=90)
    assert expiry(SHORT, NOW, None, 0) == NOW + timedelta(days=7)
    assert expiry(OPTIONAL, NOW, None, 0) is None


def test_an_explicit_expire_time_is_kept() -> None:
    at = NOW + timedelta(days=3, hours=5)
    assert expiry(DEFAULT, NOW, at, 0) == at
    assert expiry(OPTIONAL, NOW, at, 0) == at
    assert expiry(DEFAULT, NOW, NOW + timedelta(days=1), 0) == NOW + timedelta(days=1)
    assert expiry(SHORT, NOW, NOW + timedelta(days=30), 0) == NOW + timedelta(days=30)


@pytest.mark.parametrize(
    ("policy", "ttl_days"),
    [(DEFAULT, -1), (DEFAULT, -365), (DEFAULT, 366), (DEFAULT, 10_000), (SHORT, 31), (OPTIONAL, 366)],
)
def test_ttl_days_outside_the_policy_is_invalid(policy: KeyPolicy, ttl_days: int) -> None:
    with pytest.raises(IdentityError) as error:
        expiry(policy, NOW, None, ttl_days)
    assert invalid_field(error) == "ttl_days"


def test_ttl_days_is_capped_at_365_even_if_a_policy_said_more() -> None:
    lax = KeyPolicy(max_expiry_days=1000)
    with pytest.raises(IdentityError) as error:
        expiry(lax, NOW, None, 366)
    assert invalid_field(error) == "ttl_days"


@pytest.mark.parametrize(
    ("policy", "lifetime"),
    [
        (DEFAULT, timedelta(days=1) - timedelta(seconds=1)),
        (DEFAULT, timedelta(hours=1)),
        (DEFAULT, timedelta(0)),
        (DEFAULT, -timedelta(days=3)),
        (DEFAULT, timedelta(days=365, seconds=1)),
        (SHORT, timedelta(days=30, seconds=1)),
        (OPTIONAL, timedelta(hours=23)),
    ],
)
def test_an_expire_time_outside_one_day_to_the_policy_maximum_is_invalid(
    policy: KeyPolicy, lifetime: timedelta
) -> None:
    with pytest.raises(IdentityError) as error:
        expiry(policy, NOW, NOW + lifetime, 0)
    assert invalid_field(error) == "expire_time"


def test_expire_time_and_ttl_days_together_are_invalid() -> None:
    with pytest.raises(IdentityError) as error:
        expiry(DEFAULT, NOW, NOW + timedelta(days=5), 5)
    assert invalid_field(error) == "ttl_days"


# --- publishable keys ------------------------------------------------------------------------------


def test_a_publishable_key_may_hold_only_track_events() -> None:
    check_kind_scopes(KeyKind.PUBLISHABLE, ["track:events"])
    check_kind_scopes(KeyKind.SECRET, ["track:events", "inventory:read"])
    for scopes in (["inventory:read"], ["track:events", "inventory:read"], ["*"], ["track:*"], []):
        with pytest.raises(IdentityError) as error:
            check_kind_scopes(KeyKind.PUBLISHABLE, scopes, "key.scopes")
        assert invalid_field(error) == "key.scopes"


# --- no escalation ---------------------------------------------------------------------------------


def caller(scopes: list[str], resources: Sequence[tuple[str, str]] = (), platform: bool = False) -> Caller:
    return Caller(
        principal_id="sa_1",
        org_id="org_1",
        key_id="key_1",
        scopes=tuple(scopes),
        resources=tuple(ResourceRef(t, i) for t, i in resources),
        platform=platform,
    )


def refs(*pairs: tuple[str, str]) -> list[ResourceRef]:
    return [ResourceRef(t, i) for t, i in pairs]


def escalation(who: Caller, scopes: list[str], resources: Sequence[ResourceRef] = ()) -> Reason | None:
    try:
        check_no_escalation(who, scopes, resources)
    except IdentityError as error:
        return error.reason
    return None


def test_a_caller_may_hand_out_what_it_holds() -> None:
    holder = caller(["inventory:*", "billing:read", "admin:apikeys"])
    assert escalation(holder, ["inventory:read", "inventory:write", "billing:read"]) is None
    assert escalation(holder, ["inventory:*"]) is None
    assert escalation(holder, ["admin:apikeys"], refs(("website", "w_1"))) is None


@pytest.mark.parametrize(
    "scopes",
    [
        ["*"],
        ["billing:write"],
        ["billing:*"],
        ["inventory:read:own"],
        ["admin:*"],
        ["inventory:read", "rate:premium"],
    ],
)
def test_a_caller_cannot_hand_out_more_scopes_than_it_holds(scopes: list[str]) -> None:
    holder = caller(["inventory:*", "billing:read", "admin:apikeys"])
    assert escalation(holder, scopes) is Reason.INSUFFICIENT_SCOPE


def test_a_narrow_grant_does_not_cover_its_wildcard() -> None:
    assert escalation(caller(["inventory:read"]), ["inventory:*"]) is Reason.INSUFFICIENT_SCOPE


def test_a_star_holder_outside_the_platform_may_hand_out_any_scope() -> None:
    assert escalation(caller(["*"]), ["*", "anything:at:all"]) is None


def test_a_platform_caller_is_excepted() -> None:
    platform = caller(["admin:apikeys"], [("website", "w_1")], platform=True)
    assert escalation(platform, ["*"], []) is None
    assert escalation(platform, ["billing:write"], refs(("shop", "s_1"))) is None


def test_a_resource_limited_caller_cannot_hand_out_other_or_global_access() -> None:
    limited = caller(["*"], [("website", "w_1"), ("shop", "*")])
    assert escalation(limited, ["inventory:read"], refs(("website", "w_1"))) is None
    assert escalation(limited, ["inventory:read"], refs(("shop", "s_9"), ("shop", "*"))) is None
    assert escalation(limited, ["inventory:read"], []) is Reason.RESOURCE_FORBIDDEN
    assert escalation(limited, ["inventory:read"], refs(("website", "w_2"))) is Reason.RESOURCE_FORBIDDEN
    assert escalation(limited, ["inventory:read"], refs(("website", "*"))) is Reason.RESOURCE_FORBIDDEN
    assert escalation(limited, ["inventory:read"], refs(("Website", "w_1"))) is Reason.RESOURCE_FORBIDDEN
    assert (
        escalation(limited, ["inventory:read"], refs(("website", "w_1"), ("blog", "b_1")))
        is Reason.RESOURCE_FORBIDDEN
    )


def test_an_unlimited_caller_may_hand_out_any_resources() -> None:
    assert escalation(caller(["inventory:*"]), ["inventory:read"], refs(("website", "*"))) is None


def test_scopes_are_judged_before_resources() -> None:
    limited = caller(["inventory:read"], [("website", "w_1")])
    assert escalation(limited, ["billing:read"], refs(("website", "w_2"))) is Reason.INSUFFICIENT_SCOPE


# --- grace period ----------------------------------------------------------------------------------


@pytest.mark.parametrize("grace", [timedelta(0), timedelta(seconds=1), timedelta(hours=1), timedelta(days=7)])
def test_a_grace_period_of_zero_to_seven_days_is_kept(grace: timedelta) -> None:
    assert grace_period(grace) == grace


@pytest.mark.parametrize(
    "grace", [timedelta(days=7, microseconds=1), timedelta(days=30), -timedelta(microseconds=1)]
)
def test_a_grace_period_outside_zero_to_seven_days_is_invalid(grace: timedelta) -> None:
    with pytest.raises(IdentityError) as error:
        grace_period(grace)
    assert invalid_field(error) == "grace_period"
