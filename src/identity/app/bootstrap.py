"""``identity bootstrap``: the platform organization, its service account and platform key."""

from __future__ import annotations

from identity.app.keys import IssuedKey, Keys, KeySpec
from identity.app.organizations import Organizations
from identity.app.principals import Principals
from identity.crypto.hashing import Hasher
from identity.domain.errors import failed_precondition
from identity.domain.model import Caller, PrincipalKind, RequestInfo
from identity.store.database import Database
from identity.store.repository import Repository

SYSTEM = RequestInfo(
    Caller("system", "", "", ("*",), (), platform=True), peer="local", user_agent="identity-cli"
)


def bootstrap(db: Database, hasher: Hasher) -> IssuedKey:
    """Create the platform organization and a platform key (scope ``*``, no expiry), once per database."""
    with db.read() as session:
        if Repository(session).platform_organization() is not None:
            raise failed_precondition(
                "this database is bootstrapped already; the platform key was shown then"
            )
    org = Organizations(db).create(SYSTEM, "Platform", {"require_expiry": False}, platform=True)
    account = Principals(db, hasher).create(SYSTEM, org.id, PrincipalKind.SERVICE_ACCOUNT, "platform-admin")
    return Keys(db, hasher).create(SYSTEM, KeySpec(org.id, account.id, "platform key", ("*",)))
