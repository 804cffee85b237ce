"""The decision engine behind Check, BatchCheck and Envoy's ext_authz: one engine, many doors.

Reasons come in API.md's order of evaluation: missing -> invalid -> expired/revoked -> inactive
organization -> disabled principal -> IP -> scope -> resource. The credential is resolved once
(by the same :class:`Authenticator` the admin interceptor uses) and then judged per item.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from identity.app.background import BackgroundWriter
from identity.app.common import audit_event
from identity.authz import Authenticator
from identity.cache.allows import AllowMemo, Held
from identity.domain import scopes as scope_rules
from identity.domain.decisions import Decision, permission_denial
from identity.domain.errors import IdentityError, Reason
from identity.domain.model import AuditEvent, AuditOutcome, Caller, Origin, RequestInfo, ResourceRef
from identity.domain.validation import Violations

MAX_BATCH_ITEMS = 100
# Not a judgment of the credential: the service could not decide now, so the RPC fails.
UNDECIDED = (Reason.UNAVAILABLE, Reason.INTERNAL, Reason.RATE_LIMITED)


@dataclass(frozen=True)
class CheckItem:
    """What one check asks: permissions that must all be granted, on an optional resource."""

    permissions: tuple[str, ...]
    resource: ResourceRef | None = None


def validate_items(items: Sequence[CheckItem], field_prefix: str, client_ip: str) -> None:
    """INVALID_ARGUMENT for malformed permissions, resources or client address, naming the field."""
    problems = Violations()
    if client_ip:
        try:
            ipaddress.ip_address(client_ip)
        except ValueError:
            problems.add("client_ip", "is not an IPv4 or IPv6 address")
    for index, item in enumerate(items):
        prefix = field_prefix.format(index=index)
        problems.scopes(f"{prefix}permissions", item.permissions, required=False)
        if item.resource is not None:
            problems.resources(f"{prefix}resource", [item.resource])
    problems.raise_if_any()


class DecisionEngine:
    """Judges credentials; only an unreachable database is an error (UNAVAILABLE), never an allow.

    Decisions are audited (``authz.check``) off the request path: denials always, allows when
    ``audit_allows``; an allowed key's ``last_used_time`` is noted the same way.
    """

    def __init__(
        self,
        authenticator: Authenticator,
        writer: BackgroundWriter,
        memo: AllowMemo[Decision],
        *,
        audit_allows: bool,
    ) -> None:
        """Resolve credentials with ``authenticator``; audit and note key use through ``writer``.

        Single checks that were allowed are remembered in ``memo`` while they hold.
        """
        self._authenticator = authenticator
        self._writer = writer
        self._memo = memo
        self._audit_allows = audit_allows

    @property
    def audits_allows(self) -> bool:
        """Whether every allow is audited (so each one needs its request and origin)."""
        return self._audit_allows

    def memo_key(self, credential: str, item: CheckItem, client_ip: str) -> Hashable:
        """What a single check's allow is remembered under."""
        return self._memo.key(credential, item.permissions, item.resource, client_ip)

    def remembered(self, memo_key: Hashable) -> Held[Decision] | None:
        """The allow remembered under ``memo_key`` with its bounds, if it still holds (asking is not an allow)."""
        return self._memo.held(memo_key, time.time())

    def allowed_again(self, key_id: str) -> None:
        """What a remembered allow answered elsewhere does: note the key's use.

        Only when allows are not audited: an audited allow needs its request and origin.
        """
        self._writer.touch(key_id)

    def check(self, credential: str, item: CheckItem, client_ip: str, origin: Origin) -> Decision:
        """Judge one item."""
        memo_key = self.memo_key(credential, item, client_ip)
        remembered = self._memo.get(memo_key, time.time())
        if remembered is not None:
            self._allowed(remembered, item, origin)
            return remembered
        validate_items([item], "", client_ip)
        generation = self._memo.generation
        caller, decisions = self._judge_all(credential, [item], client_ip, origin)
        if caller is not None and decisions[0].allowed:
            until = caller.valid_until.timestamp() if caller.valid_until else None
            self._memo.put(memo_key, decisions[0], generation, until)
        return decisions[0]

    def batch(
        self, credential: str, items: Sequence[CheckItem], client_ip: str, origin: Origin
    ) -> list[Decision]:
        """Judge many items (1..100) for one credential, resolving the credential once."""
        problems = Violations()
        if not items:  # nothing to judge: a mistake, and the credential would go unjudged
            problems.add("items", "at least one item is required")
        problems.listed("items", items, MAX_BATCH_ITEMS)
        problems.raise_if_any()
        validate_items(items, "items[{index}].", client_ip)
        return self._judge_all(credential, items, client_ip, origin)[1]

    def _judge_all(
        self, credential: str, items: Sequence[CheckItem], client_ip: str, origin: Origin
    ) -> tuple[Caller | None, list[Decision]]:
        """The caller the credential resolved to (None if it did not), and a decision per item."""
        caller: Caller | None = None
        try:
            # Failures count against the end client when the request names one, else the caller.
            attempt = Origin(client_ip=client_ip) if client_ip else origin
            caller = self._authenticator.authenticate(credential, client_ip or None, attempt)
        except IdentityError as error:
            if error.reason is Reason.RATE_LIMITED:
                refused = Decision(False, error.reason, error.message)
                self._writer.record_throttled(
                    ("authz.check", " ".join(items[0].permissions)), lambda: _audit(items[0], refused, origin)
                )
            if error.reason in UNDECIDED:
                raise
            decisions = [Decision(False, error.reason, error.message) for _ in items]
        else:
            decisions = [self._judge(caller, item) for item in items]
        for item, decision in zip(items, decisions, strict=True):
            if decision.allowed:
                self._allowed(decision, item, origin)
            else:
                self._writer.record(_audit(item, decision, origin))
        return caller, decisions

    def _allowed(self, decision: Decision, item: CheckItem, origin: Origin) -> None:
        """What every allow does besides answering: note the key's use, audit it when asked to."""
        self._writer.touch(decision.key_id)
        if self._audit_allows:
            self._writer.record(_audit(item, decision, origin))

    @staticmethod
    def _judge(caller: Caller, item: CheckItem) -> Decision:
        denial = permission_denial(caller.scopes, caller.resources, item.permissions, item.resource)
        return Decision(
            allowed=denial is None,
            reason=Reason.ALLOWED if denial is None else denial.reason,
            message="allowed" if denial is None else denial.message,
            principal_id=caller.principal_id,
            org_id=caller.org_id,
            key_id=caller.key_id,
            granted_scopes=caller.scopes,
            missing_permissions=tuple(scope_rules.missing(caller.scopes, item.permissions)),
            rate_tier=scope_rules.rate_tier(caller.scopes),
            credential_expire_time=caller.credential_expire_time,
        )


def _audit(item: CheckItem, decision: Decision, origin: Origin) -> AuditEvent:
    caller = Caller(decision.principal_id, decision.org_id, decision.key_id, (), (), platform=False)
    resource = f"{item.resource.type}/{item.resource.id}" if item.resource else ""
    return audit_event(
        RequestInfo(caller, peer=origin.peer, user_agent=origin.user_agent),
        "authz.check",
        decision.key_id,
        decision.org_id,
        outcome=AuditOutcome.SUCCESS if decision.allowed else AuditOutcome.DENIED,
        reason="" if decision.allowed else decision.reason.value,
        details={
            "required": " ".join(item.permissions),
            "granted": " ".join(decision.granted_scopes),
            "resource": resource,
        },
    )
