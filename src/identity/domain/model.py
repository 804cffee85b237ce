"""The entities of the identity service as plain dataclasses."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class OrganizationState(StrEnum):
    """Whether an organization's keys and tokens work."""

    ACTIVE = "active"
    INACTIVE = "inactive"


class PrincipalKind(StrEnum):
    """User or service account."""

    USER = "user"
    SERVICE_ACCOUNT = "service_account"

    @property
    def id_prefix(self) -> str:
        """The type prefix of this kind's ids."""
        return "usr" if self is PrincipalKind.USER else "sa"


class PrincipalState(StrEnum):
    """Whether a principal's keys and tokens work."""

    ACTIVE = "active"
    DISABLED = "disabled"


class KeyKind(StrEnum):
    """Secret (server-side) or publishable (tracking, may sit in a web page)."""

    SECRET = "secret"
    PUBLISHABLE = "publishable"


class KeyState(StrEnum):
    """Whether a key works; EXPIRED is derived from the clock."""

    ACTIVE = "active"
    REVOKED = "revoked"
    EXPIRED = "expired"


class KeyEventType(StrEnum):
    """What happened to a key, as the key change log records it."""

    CREATED = "created"
    UPDATED = "updated"
    ROTATED = "rotated"
    REVOKED = "revoked"
    DELETED = "deleted"
    EXPIRED = "expired"


class AuditOutcome(StrEnum):
    """How an audited action ended."""

    SUCCESS = "success"
    FAILURE = "failure"
    DENIED = "denied"


@dataclass(frozen=True, slots=True)
class KeyPolicy:
    """An organization's rules for its keys (defaults from API.md)."""

    max_keys_per_user: int = 1
    max_keys_per_service_account: int = 2
    max_expiry_days: int = 365
    default_expiry_days: int = 90
    require_expiry: bool = True

    def max_keys(self, kind: PrincipalKind) -> int:
        """The quota of active keys for one principal of ``kind``."""
        if kind is PrincipalKind.USER:
            return self.max_keys_per_user
        return self.max_keys_per_service_account


@dataclass(frozen=True, slots=True)
class Organization:
    """A tenant."""

    id: str
    display_name: str
    state: OrganizationState
    key_policy: KeyPolicy
    create_time: datetime
    update_time: datetime
    is_platform: bool = False


@dataclass(frozen=True, slots=True)
class Principal:
    """A user or service account of one organization."""

    id: str
    org_id: str
    kind: PrincipalKind
    display_name: str
    state: PrincipalState
    create_time: datetime
    update_time: datetime
    has_password: bool = False


@dataclass(frozen=True, order=True, slots=True)
class ResourceRef:
    """A resource a key can be limited to; ``id`` ``*`` means every resource of ``type``."""

    type: str
    id: str

    def covers(self, other: ResourceRef) -> bool:
        """Whether access to ``self`` includes access to ``other``."""
        return self.type == other.type and (self.id == "*" or self.id == other.id)


@dataclass(frozen=True, slots=True)
class Key:
    """An API key's metadata; never its secret or hash."""

    id: str
    org_id: str
    principal_id: str
    display_name: str
    description: str
    kind: KeyKind
    environment: str
    prefix: str
    last4: str
    scopes: tuple[str, ...]
    resources: tuple[ResourceRef, ...]
    allowed_cidrs: tuple[str, ...]
    require_key_id: bool
    create_time: datetime
    update_time: datetime
    expire_time: datetime | None
    created_by: str
    revoke_time: datetime | None = None
    revoke_reason: str = ""
    last_used_time: datetime | None = None
    previous_secret_expire_time: datetime | None = None

    def state(self, now: datetime) -> KeyState:
        """The key's state at ``now``: revocation wins over expiry."""
        if self.revoke_time is not None:
            return KeyState.REVOKED
        if self.expire_time is not None and self.expire_time <= now:
            return KeyState.EXPIRED
        return KeyState.ACTIVE


class ChangeSubject(StrEnum):
    """What a change-log entry is about: a key, or something a key's use depends on."""

    KEY = "key"
    ORGANIZATION = "organization"
    PRINCIPAL = "principal"
    TOKEN = "token"


@dataclass(frozen=True, slots=True)
class Change:
    """One change-log entry as a cache sees it: what to forget, or (a token) what to refuse."""

    cursor: int
    subject: ChangeSubject
    subject_id: str
    expire_time: datetime | None = None  # a revoked token's own expiry


@dataclass(frozen=True, slots=True)
class KeyEvent:
    """One entry of the key change log."""

    cursor: int
    type: KeyEventType
    key: Key
    time: datetime


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One audited action; never a secret."""

    id: str
    time: datetime
    org_id: str
    actor_principal_id: str
    actor_key_id: str
    action: str
    target: str
    outcome: AuditOutcome
    reason: str = ""
    peer: str = ""
    user_agent: str = ""
    details: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling, once the credential verified."""

    principal_id: str
    org_id: str
    key_id: str
    scopes: tuple[str, ...]
    resources: tuple[ResourceRef, ...]
    platform: bool
    credential_type: str = "api_key"
    credential_expire_time: datetime | None = None
    # When this resolution stops holding by itself (expiry, a rotation's grace); None: never.
    valid_until: datetime | None = None

    def may_act_in(self, org_id: str) -> bool:
        """A caller acts only inside its own organization, except a platform credential."""
        return self.platform or self.org_id == org_id


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """What an audited action records about the request besides the caller."""

    caller: Caller
    peer: str = ""
    user_agent: str = ""


class Origin:
    """Where a request came from, for IP allowlists, throttling and the audit trail.

    Each part may be given as a function, called on first use only: asking gRPC for the peer
    costs more than a whole warm check (grpcio releases the GIL to fetch it), and a warm allow
    never needs it.
    """

    def __init__(
        self,
        peer: str | Callable[[], str] = "",
        client_ip: str | Callable[[], str] = "",
        user_agent: str | Callable[[], str] = "",
    ) -> None:
        """Where the call came from: its peer, the client address in it, and its user agent."""
        self._parts = {"peer": peer, "client_ip": client_ip, "user_agent": user_agent}

    def _part(self, name: str) -> str:
        # Resolved once and kept (not functools.cached_property: it takes a lock on every read).
        part = self._parts[name]
        if callable(part):
            part = self._parts[name] = part()
        return part

    @property
    def peer(self) -> str:
        """The transport's peer, e.g. ``ipv4:10.0.0.1:5000``."""
        return self._part("peer")

    @property
    def client_ip(self) -> str:
        """The client's IP address."""
        return self._part("client_ip")

    @property
    def user_agent(self) -> str:
        """The client's user agent."""
        return self._part("user_agent")
