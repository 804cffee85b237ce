"""SQLAlchemy table models. Only the store package touches these; the rest sees domain objects."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, ForeignKey, Index, Integer, String, Text
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps no zone, so store naive UTC)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Store as naive UTC."""
        if value is None:
            return None
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Load as aware UTC."""
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    """Declarative base of every table."""

    type_annotation_map: dict[Any, Any] = {datetime: UTCDateTime()}


class OrganizationRow(Base):
    """An organization and its key policy."""

    __tablename__ = "organizations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(16))
    is_platform: Mapped[bool] = mapped_column(Boolean, default=False)
    max_keys_per_user: Mapped[int] = mapped_column(Integer)
    max_keys_per_service_account: Mapped[int] = mapped_column(Integer)
    max_expiry_days: Mapped[int] = mapped_column(Integer)
    default_expiry_days: Mapped[int] = mapped_column(Integer)
    require_expiry: Mapped[bool] = mapped_column(Boolean)
    create_time: Mapped[datetime]
    update_time: Mapped[datetime]


class PrincipalRow(Base):
    """A user or service account."""

    __tablename__ = "principals"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    display_name: Mapped[str] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str | None] = mapped_column(Text)
    create_time: Mapped[datetime]
    update_time: Mapped[datetime]


class ApiKeyRow(Base):
    """An API key: metadata plus the argon2id hashes of its current and previous secret."""

    __tablename__ = "api_keys"
    __table_args__ = (
        Index("ix_api_keys_org_principal", "org_id", "principal_id"),
        Index("ix_api_keys_org_expire", "org_id", "expire_time"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    principal_id: Mapped[str] = mapped_column(ForeignKey("principals.id"))
    lookup: Mapped[str] = mapped_column(String(32), unique=True)
    display_name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(16))
    environment: Mapped[str] = mapped_column(String(8))
    last4: Mapped[str] = mapped_column(String(4))
    scopes: Mapped[list[str]] = mapped_column(JSON)
    resources: Mapped[list[list[str]]] = mapped_column(JSON)
    allowed_cidrs: Mapped[list[str]] = mapped_column(JSON)
    require_key_id: Mapped[bool] = mapped_column(Boolean)
    secret_hash: Mapped[str] = mapped_column(Text)
    secret_version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    previous_secret_hash: Mapped[str | None] = mapped_column(Text)
    previous_secret_expire_time: Mapped[datetime | None]
    create_time: Mapped[datetime]
    update_time: Mapped[datetime]
    expire_time: Mapped[datetime | None]
    revoke_time: Mapped[datetime | None]
    revoke_reason: Mapped[str] = mapped_column(Text, default="")
    last_used_time: Mapped[datetime | None]
    created_by: Mapped[str] = mapped_column(String(64))


class CreateKeyRequestRow(Base):
    """A CreateKey ``request_id`` seen in the last 24 hours, for idempotent retries."""

    __tablename__ = "create_key_requests"

    org_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    key_id: Mapped[str] = mapped_column(String(64))
    create_time: Mapped[datetime]


class KeyChangeRow(Base):
    """The key change log: one row per key change, written in the transaction of the change."""

    __tablename__ = "key_changes"
    __table_args__ = (Index("ix_key_changes_org_cursor", "org_id", "cursor"),)

    cursor: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    org_id: Mapped[str] = mapped_column(String(64))
    key_id: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(16))
    time: Mapped[datetime]
    snapshot: Mapped[dict[str, Any]] = mapped_column(JSON)


class AuditEventRow(Base):
    """One audit event."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_org_id", "org_id", "id"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    time: Mapped[datetime]
    org_id: Mapped[str] = mapped_column(String(64))
    actor_principal_id: Mapped[str] = mapped_column(String(64))
    actor_key_id: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(64))
    peer: Mapped[str] = mapped_column(String(128))
    user_agent: Mapped[str] = mapped_column(String(256))
    details: Mapped[dict[str, str]] = mapped_column(JSON)


class SigningKeyRow(Base):
    """A token signing key: public JWK in the clear, private key sealed under the KEK."""

    __tablename__ = "signing_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    algorithm: Mapped[str] = mapped_column(String(16))
    public_jwk: Mapped[dict[str, Any]] = mapped_column(JSON)
    sealed_private_key: Mapped[str] = mapped_column(Text)
    create_time: Mapped[datetime]
    retire_time: Mapped[datetime | None]
    publish_until: Mapped[datetime | None]


class RevokedTokenRow(Base):
    """A token revoked by its ``jti``; kept until the token would have expired anyway."""

    __tablename__ = "revoked_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    expire_time: Mapped[datetime] = mapped_column(index=True)
    revoke_time: Mapped[datetime]
