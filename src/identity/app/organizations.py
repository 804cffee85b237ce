"""Organization use cases."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from identity.app.common import audit_event, utcnow, visible_organization
from identity.domain.errors import IdentityError, Reason
from identity.domain.model import ChangeSubject, KeyPolicy, Organization, OrganizationState, RequestInfo
from identity.domain.paging import decode_token, encode_token, page
from identity.domain.validation import MAX_NAME, Violations, validate_page_size, validate_policy
from identity.ids import new_id
from identity.store.database import Database
from identity.store.repository import Repository


class Organizations:
    """Create, read, list and change organizations."""

    def __init__(self, db: Database) -> None:
        """Work against ``db``."""
        self._db = db

    def create(
        self, info: RequestInfo, display_name: str, policy_changes: dict[str, Any], *, platform: bool = False
    ) -> Organization:
        """Create an ACTIVE organization. Only a platform caller may."""
        if not info.caller.platform:
            raise IdentityError(
                Reason.INSUFFICIENT_SCOPE, "only a platform credential may create organizations"
            )
        problems = Violations()
        problems.text("display_name", display_name, max_length=MAX_NAME, required=True)
        problems.raise_if_any()
        policy = replace(KeyPolicy(), **policy_changes)
        validate_policy(policy)
        now = utcnow()
        org = Organization(new_id("org"), display_name, OrganizationState.ACTIVE, policy, now, now, platform)
        with self._db.write() as session:
            repo = Repository(session)
            repo.add_organization(org)
            repo.add_audit_event(audit_event(info, "organization.create", org.id, org.id))
        return org

    def get(self, info: RequestInfo, org_id: str) -> Organization:
        """One organization the caller may see."""
        with self._db.read() as session:
            return visible_organization(Repository(session), info.caller, org_id, "id")

    def list_page(self, info: RequestInfo, page_size: int, page_token: str) -> tuple[list[Organization], str]:
        """Organizations the caller may see: all for a platform caller, else its own."""
        size = validate_page_size(page_size)
        only = None if info.caller.platform else info.caller.org_id
        after = decode_token(page_token, [only], str) or ""
        with self._db.read() as session:
            orgs, more = page(Repository(session).list_organizations(only, after, size + 1), size)
        return orgs, encode_token(orgs[-1].id, [only]) if more else ""

    def update(
        self, info: RequestInfo, org_id: str, changes: dict[str, Any], policy_changes: dict[str, Any]
    ) -> Organization:
        """Apply masked changes: ``display_name``, ``state``, and key policy fields."""
        problems = Violations()
        if "display_name" in changes:
            problems.text(
                "organization.display_name", changes["display_name"], max_length=MAX_NAME, required=True
            )
        problems.raise_if_any()
        if ("state" in changes or policy_changes) and not info.caller.platform:
            # Quotas and activation are the platform's to set, or a tenant could lift its own limits.
            raise IdentityError(
                Reason.INSUFFICIENT_SCOPE, "only a platform credential may change state or key_policy"
            )
        with self._db.write() as session:
            repo = Repository(session)
            org = visible_organization(repo, info.caller, org_id, "organization.id")
            if org.is_platform and changes.get("state") is OrganizationState.INACTIVE:
                raise IdentityError(
                    Reason.FAILED_PRECONDITION, "the platform organization cannot be deactivated"
                )
            policy = replace(org.key_policy, **policy_changes)
            validate_policy(policy, "organization.key_policy")
            updated = replace(org, **changes, key_policy=policy, update_time=utcnow())
            repo.save_organization(updated)
            repo.add_dependency_change(ChangeSubject.ORGANIZATION, org.id, org.id, updated.update_time)
            fields = ",".join(sorted([*changes, *(f"key_policy.{k}" for k in policy_changes)]))
            repo.add_audit_event(
                audit_event(info, "organization.update", org.id, org.id, details={"fields": fields})
            )
        return updated
