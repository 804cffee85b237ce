"""Queries for token signing keys and revoked tokens."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from identity.domain.model import ChangeSubject
from identity.store.models import RevokedTokenRow, SigningKeyRow
from identity.store.repository import log_change


class TokenRepository:
    """Signing keys and token revocations, inside one unit-of-work session."""

    def __init__(self, session: Session) -> None:
        """Work inside ``session``."""
        self.session = session

    def signing_keys(self, now: datetime) -> list[SigningKeyRow]:
        """Keys still published (current, or retired while tokens they signed may live), newest first."""
        query = select(SigningKeyRow).where(
            or_(SigningKeyRow.publish_until.is_(None), SigningKeyRow.publish_until > now)
        )
        return list(
            self.session.scalars(query.order_by(SigningKeyRow.create_time.desc(), SigningKeyRow.kid.desc()))
        )

    def add_signing_key(
        self,
        kid: str,
        algorithm: str,
        public_jwk: dict[str, Any],
        sealed: str,
        now: datetime,
        publish_until: datetime,
    ) -> None:
        """Make a new key current; every older current key retires and stays published until ``publish_until``."""
        self.session.execute(
            update(SigningKeyRow)
            .where(SigningKeyRow.retire_time.is_(None))
            .values(retire_time=now, publish_until=publish_until)
        )
        self.session.add(
            SigningKeyRow(
                kid=kid,
                algorithm=algorithm,
                public_jwk=public_jwk,
                sealed_private_key=sealed,
                create_time=now,
                retire_time=None,
                publish_until=None,
            )
        )

    def revoke_token(self, jti: str, org_id: str, expire_time: datetime, now: datetime) -> None:
        """Record a revoked token id (once; revoking twice changes nothing) and log it for every replica."""
        if self.session.get(RevokedTokenRow, jti) is None:
            self.session.add(RevokedTokenRow(jti=jti, expire_time=expire_time, revoke_time=now))
            snapshot = {"id": jti, "expire_time": expire_time.isoformat()}
            log_change(self.session, ChangeSubject.TOKEN.value, org_id, "", snapshot, now)
        # Rows of tokens that expired anyway no longer matter.
        self.session.execute(delete(RevokedTokenRow).where(RevokedTokenRow.expire_time < now))

    def revoked_tokens(self, now: datetime) -> dict[str, datetime]:
        """Every revoked token that has not expired yet: its id and expiry."""
        query = select(RevokedTokenRow.jti, RevokedTokenRow.expire_time).where(
            RevokedTokenRow.expire_time >= now
        )
        return {jti: expire_time for jti, expire_time in self.session.execute(query)}

    def is_revoked(self, jti: str) -> bool:
        """Whether the token with this id was revoked."""
        return self.session.get(RevokedTokenRow, jti) is not None
