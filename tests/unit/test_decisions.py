"""IP allow-lists and the order in which a verified credential is judged."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from identity.domain.decisions import CredentialFacts, credential_denial, ip_allowed, permission_denial
from identity.domain.errors import Reason
from identity.domain.model import (
    Key,
    KeyKind,
    KeyPolicy,
    Organization,
    OrganizationState,
    Principal,
    PrincipalKind,
    PrincipalState,
    ResourceRef,
)

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("cidrs", "client_ip", "allowed"),
    [
        (["10.0.0.0/8"], "10.1.2.3", True),
        (["10.0.0.0/8"], "10.255.255.255", True),
        (["10.0.0.0/8"], "11.0.0.1", False),
        (["10.0.0.0/8"], "9.255.255.255", False),
        (["192.168.1.0/24", "10.0.0.0/8"], "10.9.9.9", True),
        (["192.168.1.7/32"], "192.168.1.7", True),
        (["192.168.1.7/32"], "192.168.1.8", False),
        (["2001:db8::/32"], "2001:db8::1", True),
        (["2001:db8::/32"], "2001:db8:ffff::1", True),
        (["2001:db8::/32"], "2001:db9::1", False),
        (["::1/128"], "::1", True),
        (["10.0.0.0/8"], "::ffff:10.1.2.3", True),  # IPv4-mapped IPv6 is judged as its IPv4 address
        (["10.0.0.0/8"], "::ffff:11.1.2.3", False),
        (["2001:db8::/32"], "10.1.2.3", False),  # other address family
        (["10.0.0.0/8"], "2001:db8::1", False),
        (["10.0.0.0/8"], "", False),
        (["10.0.0.0/8"], None, False),
        (["10.0.0.0/8"], "not an address", False),
        (["10.0.0.0/8"], "10.1.2.3:5000", False),
        ([], "10.1.2.3", True),
        ([], "2001:db8::1", True),
        ([], None, True),
        ([], "", True),
    ],
)
def test_ip_allowed(cidrs: list[str], client_ip: str | None, allowed: bool) -> None:
    assert ip_allowed(cidrs, client_ip) is allowed


def facts() -> CredentialFacts:
    """A fine credential: active key, organization and principal, limited to 10.0.0.0/8."""
    org = Organization("org_1", "Acme", OrganizationState.ACTIVE, KeyPolicy(), NOW, NOW)
    principal = Principal(
        "sa_1", "org_1", PrincipalKind.SERVICE_ACCOUNT, "robot", PrincipalState.ACTIVE, NOW, NOW
    )
    key = Key(
        id="key_1",
        org_id="org_1",
        principal_id="sa_1",
        display_name="k",
        description="",
        kind=KeyKind.SECRET,
        environment="live",
        prefix="idk_live_x",
        last4="abcd",
        scopes=("inventory:read",),
        resources=(),
        allowed_cidrs=("10.0.0.0/8",),
        require_key_id=False,
        create_time=NOW - timedelta(days=1),
        update_time=NOW - timedelta(days=1),
        expire_time=NOW + timedelta(days=30),
        created_by="sa_0",
    )
    return CredentialFacts(key, org, principal)


def reason(subject: CredentialFacts, client_ip: str | None = "10.0.0.1") -> Reason | None:
    denial = credential_denial(subject, NOW, client_ip)
    return None if denial is None else denial.reason


def test_a_fine_credential_is_not_denied() -> None:
    assert reason(facts()) is None
    assert reason(facts(), "::ffff:10.0.0.1") is None


def test_credential_denials_come_in_the_documented_order() -> None:
    good = facts()
    everything_wrong = CredentialFacts(
        replace(good.key, revoke_time=NOW - timedelta(hours=1), expire_time=NOW - timedelta(hours=2)),
        replace(good.organization, state=OrganizationState.INACTIVE),
        replace(good.principal, state=PrincipalState.DISABLED),
    )
    outside = "192.168.0.1"
    # Revocation wins over expiry, which wins over the organization, the principal and the address.
    assert reason(everything_wrong, outside) is Reason.REVOKED_API_KEY
    not_revoked = replace(everything_wrong, key=replace(everything_wrong.key, revoke_time=None))
    assert reason(not_revoked, outside) is Reason.EXPIRED_API_KEY
    current = replace(not_revoked, key=replace(not_revoked.key, expire_time=NOW + timedelta(days=1)))
    assert reason(current, outside) is Reason.INACTIVE_ORGANIZATION
    active_org = replace(current, organization=good.organization)
    assert reason(active_org, outside) is Reason.DISABLED_PRINCIPAL
    active_principal = replace(active_org, principal=good.principal)
    assert reason(active_principal, outside) is Reason.IP_RESTRICTED
    assert reason(active_principal, "10.0.0.1") is None


def test_expiry_is_judged_at_the_given_instant() -> None:
    good = facts()
    at_expiry = replace(good, key=replace(good.key, expire_time=NOW))
    assert reason(at_expiry) is Reason.EXPIRED_API_KEY
    never = replace(good, key=replace(good.key, expire_time=None))
    assert reason(never) is None


def test_no_client_address_fails_an_ip_limited_key_but_not_an_unlimited_one() -> None:
    good = facts()
    assert reason(good, None) is Reason.IP_RESTRICTED
    assert reason(replace(good, key=replace(good.key, allowed_cidrs=())), None) is None


def test_permission_denial_judges_scopes_then_resources() -> None:
    website = ResourceRef("website", "w_1")
    only_w1 = [website]
    assert permission_denial(["inventory:*"], only_w1, ["inventory:read"], website) is None
    assert permission_denial(["inventory:*"], [], ["inventory:read"], ResourceRef("website", "w_2")) is None
    assert permission_denial(["inventory:*"], only_w1, ["inventory:read"], None) is None
    denied = permission_denial(["inventory:*"], only_w1, ["inventory:read"], ResourceRef("website", "w_2"))
    assert denied is not None and denied.reason is Reason.RESOURCE_FORBIDDEN
    wildcard = [ResourceRef("website", "*")]
    assert (
        permission_denial(["inventory:*"], wildcard, ["inventory:read"], ResourceRef("website", "w_2"))
        is None
    )
    denied = permission_denial(["inventory:*"], wildcard, ["inventory:read"], ResourceRef("shop", "w_2"))
    assert denied is not None and denied.reason is Reason.RESOURCE_FORBIDDEN
    both = permission_denial(["inventory:read"], only_w1, ["billing:read"], ResourceRef("website", "w_2"))
    assert both is not None and both.reason is Reason.INSUFFICIENT_SCOPE
    assert "billing:read" in both.message
