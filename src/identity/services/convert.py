"""Conversions between identity.v1 messages and domain objects."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from identity.domain.errors import invalid
from identity.domain.model import (
    AuditEvent,
    AuditOutcome,
    Key,
    KeyEventType,
    KeyKind,
    KeyPolicy,
    KeyState,
    Organization,
    OrganizationState,
    Principal,
    PrincipalKind,
    PrincipalState,
    ResourceRef,
)
from identity.v1 import (
    audit_service_pb2,
    common_pb2,
    key_service_pb2,
    organization_service_pb2,
    principal_service_pb2,
)

E = TypeVar("E")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

ORG_STATES = {
    OrganizationState.ACTIVE: organization_service_pb2.ORGANIZATION_STATE_ACTIVE,
    OrganizationState.INACTIVE: organization_service_pb2.ORGANIZATION_STATE_INACTIVE,
}
PRINCIPAL_KINDS = {
    PrincipalKind.USER: principal_service_pb2.PRINCIPAL_KIND_USER,
    PrincipalKind.SERVICE_ACCOUNT: principal_service_pb2.PRINCIPAL_KIND_SERVICE_ACCOUNT,
}
PRINCIPAL_STATES = {
    PrincipalState.ACTIVE: principal_service_pb2.PRINCIPAL_STATE_ACTIVE,
    PrincipalState.DISABLED: principal_service_pb2.PRINCIPAL_STATE_DISABLED,
}
KEY_KINDS = {
    KeyKind.SECRET: key_service_pb2.KEY_KIND_SECRET,
    KeyKind.PUBLISHABLE: key_service_pb2.KEY_KIND_PUBLISHABLE,
}
KEY_STATES = {
    KeyState.ACTIVE: key_service_pb2.KEY_STATE_ACTIVE,
    KeyState.REVOKED: key_service_pb2.KEY_STATE_REVOKED,
    KeyState.EXPIRED: key_service_pb2.KEY_STATE_EXPIRED,
}
KEY_EVENT_TYPES = {
    KeyEventType.CREATED: key_service_pb2.KEY_EVENT_TYPE_CREATED,
    KeyEventType.UPDATED: key_service_pb2.KEY_EVENT_TYPE_UPDATED,
    KeyEventType.ROTATED: key_service_pb2.KEY_EVENT_TYPE_ROTATED,
    KeyEventType.REVOKED: key_service_pb2.KEY_EVENT_TYPE_REVOKED,
    KeyEventType.DELETED: key_service_pb2.KEY_EVENT_TYPE_DELETED,
    KeyEventType.EXPIRED: key_service_pb2.KEY_EVENT_TYPE_EXPIRED,
}
AUDIT_OUTCOMES = {
    AuditOutcome.SUCCESS: audit_service_pb2.AUDIT_OUTCOME_SUCCESS,
    AuditOutcome.FAILURE: audit_service_pb2.AUDIT_OUTCOME_FAILURE,
    AuditOutcome.DENIED: audit_service_pb2.AUDIT_OUTCOME_DENIED,
}


def from_proto_enum(table: Mapping[E, int], value: int) -> E | None:
    """The domain value of a proto enum number; None for UNSPECIFIED or unknown numbers."""
    for domain_value, number in table.items():
        if number == value:
            return domain_value
    return None


def timestamp(value: datetime | None) -> Timestamp | None:
    """A Timestamp, or None to leave the field unset."""
    return None if value is None else to_timestamp(value)


def to_timestamp(value: datetime) -> Timestamp:
    """The Timestamp of an aware datetime, by exact integer arithmetic (faster than FromDatetime)."""
    since = value - _EPOCH
    return Timestamp(seconds=since.days * 86_400 + since.seconds, nanos=since.microseconds * 1000)


def to_datetime(stamp: Timestamp, field: str) -> datetime:
    """An aware UTC datetime from a Timestamp; one out of range is INVALID_ARGUMENT on ``field``."""
    try:
        return stamp.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise invalid(field, "is not a valid timestamp") from None


def to_timedelta(duration: Duration, field: str) -> timedelta:
    """A timedelta from a Duration; one out of range is INVALID_ARGUMENT on ``field``."""
    if not duration.ByteSize():  # unset or zero, as most are: no conversion
        return timedelta(0)
    try:
        return duration.ToTimedelta()
    except (ValueError, OverflowError):
        raise invalid(field, "is not a valid duration") from None


def policy_message(policy: KeyPolicy) -> organization_service_pb2.KeyPolicy:
    """A KeyPolicy message with every field set."""
    return organization_service_pb2.KeyPolicy(
        max_keys_per_user=policy.max_keys_per_user,
        max_keys_per_service_account=policy.max_keys_per_service_account,
        max_expiry_days=policy.max_expiry_days,
        default_expiry_days=policy.default_expiry_days,
        require_expiry=policy.require_expiry,
    )


def policy_fields(message: organization_service_pb2.KeyPolicy) -> dict[str, int | bool]:
    """The policy fields a message sets explicitly."""
    return {field.name: value for field, value in message.ListFields()}


def organization_message(org: Organization) -> organization_service_pb2.Organization:
    """An Organization message."""
    return organization_service_pb2.Organization(
        id=org.id,
        display_name=org.display_name,
        state=ORG_STATES[org.state],
        key_policy=policy_message(org.key_policy),
        create_time=timestamp(org.create_time),
        update_time=timestamp(org.update_time),
    )


def principal_message(principal: Principal) -> principal_service_pb2.Principal:
    """A Principal message."""
    return principal_service_pb2.Principal(
        id=principal.id,
        org_id=principal.org_id,
        kind=PRINCIPAL_KINDS[principal.kind],
        display_name=principal.display_name,
        state=PRINCIPAL_STATES[principal.state],
        create_time=timestamp(principal.create_time),
        update_time=timestamp(principal.update_time),
        has_password=principal.has_password,
    )


def resource_refs(messages: Iterable[common_pb2.ResourceRef]) -> tuple[ResourceRef, ...]:
    """Domain resource references from messages."""
    return tuple(ResourceRef(m.type, m.id) for m in messages)


def key_message(key: Key, now: datetime) -> key_service_pb2.Key:
    """A Key message (metadata only: the type has no field for a secret)."""
    return key_service_pb2.Key(
        id=key.id,
        org_id=key.org_id,
        principal_id=key.principal_id,
        display_name=key.display_name,
        description=key.description,
        kind=KEY_KINDS[key.kind],
        environment=key.environment,
        prefix=key.prefix,
        last4=key.last4,
        scopes=key.scopes,
        resources=[common_pb2.ResourceRef(type=r.type, id=r.id) for r in key.resources],
        allowed_cidrs=key.allowed_cidrs,
        require_key_id=key.require_key_id,
        state=KEY_STATES[key.state(now)],
        create_time=timestamp(key.create_time),
        update_time=timestamp(key.update_time),
        expire_time=timestamp(key.expire_time),
        revoke_time=timestamp(key.revoke_time),
        revoke_reason=key.revoke_reason,
        last_used_time=timestamp(key.last_used_time),
        created_by=key.created_by,
        previous_secret_expire_time=timestamp(
            key.previous_secret_expire_time
            if key.previous_secret_expire_time and key.previous_secret_expire_time > now
            else None
        ),
    )


def audit_message(event: AuditEvent) -> audit_service_pb2.AuditEvent:
    """An AuditEvent message."""
    return audit_service_pb2.AuditEvent(
        id=event.id,
        time=timestamp(event.time),
        org_id=event.org_id,
        actor_principal_id=event.actor_principal_id,
        actor_key_id=event.actor_key_id,
        action=event.action,
        target=event.target,
        outcome=AUDIT_OUTCOMES[event.outcome],
        reason=event.reason,
        peer=event.peer,
        user_agent=event.user_agent,
        details=event.details,
    )
