"""Input rules: lengths, names, CIDRs, resources, scopes. Each rule names the field it judges."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence

from identity.domain.errors import FieldViolation, invalid_fields
from identity.domain.model import KeyPolicy, ResourceRef
from identity.domain.scopes import scope_error

MAX_NAME = 200
MAX_DESCRIPTION = 1000
MAX_REASON = 500
MAX_LIST = 50
MAX_ID = 64
MAX_REQUEST_ID = 128
ENVIRONMENTS = ("live", "test")

_RESOURCE_TYPE = re.compile(r"[a-z0-9_.-]{1,64}")
_RESOURCE_ID = re.compile(r"[\x21-\x7e]{1,128}")
_ID = re.compile(r"[a-z]{2,4}_[0-9A-Za-z]{1,40}")


def is_id(value: str) -> bool:
    """Whether ``value`` is shaped as an opaque id (``key_…``, ``org_…``): at most 64 characters."""
    return len(value) <= MAX_ID and _ID.fullmatch(value) is not None


def escape_controls(text: str) -> str:
    r"""``text`` on one line and storable anywhere: non-printable characters and backslash escaped.

    Control characters (C0 with NUL, CR and LF; DEL; C1), line and paragraph separators and
    other non-printable code points become Python-style escapes (``\n``, ``\x00``, ``\u2028``)
    and a backslash is doubled, so nothing in the result splits or forges a line, and the
    original can be read back from it.
    """
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(c if c.isprintable() and c != "\\" else c.encode("unicode_escape").decode() for c in text)


class Violations:
    """Collects every bad field of one request, then raises once naming them all."""

    def __init__(self) -> None:
        """Start with no violation."""
        self.items: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        """Record one bad field."""
        self.items.append(FieldViolation(field, description))

    def raise_if_any(self) -> None:
        """Raise INVALID_ARGUMENT when a violation was recorded."""
        if self.items:
            raise invalid_fields(self.items)

    def text(self, field: str, value: str, *, max_length: int, required: bool = False) -> None:
        """Check a free-text field: presence, length, and no NUL.

        Any other text is stored and returned exactly, line breaks and control characters
        included: whatever prints it on one line (text logs, the CLI's columns) escapes them
        there (:func:`escape_controls`). NUL alone is refused, since PostgreSQL cannot store it.
        """
        if required and not value.strip():
            self.add(field, "is required")
        elif len(value) > max_length:
            self.add(field, f"longer than {max_length} characters")
        elif "\x00" in value:
            self.add(field, "must not contain NUL (U+0000)")

    def ident(self, field: str, value: str, prefix: str | None = None) -> None:
        """Check an opaque id such as ``key_…``; ``prefix`` pins its type."""
        if not value:
            self.add(field, "is required")
        elif not is_id(value):
            self.add(field, "is not a valid id")
        elif prefix is not None and not value.startswith(prefix + "_"):
            self.add(field, f"must start with {prefix}_")

    def listed(self, field: str, values: Sequence[object], max_items: int = MAX_LIST) -> bool:
        """Check the length of a repeated field; False when it is too long to look inside."""
        if len(values) > max_items:
            self.add(field, f"more than {max_items} items")
            return False
        return True

    def scopes(
        self, field: str, scopes: Sequence[str], *, required: bool = True, indexed: bool = True
    ) -> None:
        """Check a list of scopes against the grammar; ``indexed`` names a bad one as ``field[i]``.

        Scopes that came in one space-separated string (not ``indexed``) are named by ``field``.
        """
        if required and not scopes:
            self.add(field, "at least one scope is required")
        if not self.listed(field, scopes):
            return
        for i, scope in enumerate(scopes):
            error = scope_error(scope)
            if error:
                self.add(f"{field}[{i}]" if indexed else field, error)
        if len(set(scopes)) != len(scopes):
            self.add(field, "contains duplicates")

    def resources(self, field: str, resources: Sequence[ResourceRef]) -> None:
        """Check resource references."""
        if not self.listed(field, resources):
            return
        for i, ref in enumerate(resources):
            if not _RESOURCE_TYPE.fullmatch(ref.type):
                self.add(f"{field}[{i}].type", "must be 1..64 characters of [a-z0-9_.-]")
            if not _RESOURCE_ID.fullmatch(ref.id):
                self.add(f"{field}[{i}].id", "must be 1..128 printable characters without spaces")

    def cidrs(self, field: str, cidrs: Sequence[str]) -> None:
        """Check CIDR blocks (IPv4 or IPv6, host bits clear)."""
        if not self.listed(field, cidrs):
            return
        for i, cidr in enumerate(cidrs):
            try:
                network = ipaddress.ip_network(cidr, strict=True)
            except ValueError:
                self.add(f"{field}[{i}]", "is not a CIDR block such as 10.0.0.0/8 or 2001:db8::/32")
                continue
            # Client addresses carry no zone, and IPv4-mapped ones are compared as IPv4: such a
            # block would never match anyone.
            first = network.network_address
            if isinstance(first, ipaddress.IPv6Address) and first.scope_id is not None:
                self.add(f"{field}[{i}]", "must not name a zone (%…): client addresses carry none")
            elif isinstance(first, ipaddress.IPv6Address) and first.ipv4_mapped is not None:
                self.add(f"{field}[{i}]", "is IPv4-mapped: write the IPv4 block, such as 10.0.0.0/8")


def validate_page_size(page_size: int, *, default: int = 50, maximum: int = 1000) -> int:
    """AIP-158: 0 means the default, values above the maximum are lowered, negative is invalid."""
    if page_size < 0:
        raise invalid_fields([FieldViolation("page_size", "must not be negative")])
    return min(page_size or default, maximum)


def validate_policy(policy: KeyPolicy, field: str = "key_policy") -> None:
    """Check a key policy's ranges and coherence."""
    problems = Violations()
    for name, low, high in (
        ("max_keys_per_user", 0, 1000),
        ("max_keys_per_service_account", 0, 1000),
        ("max_expiry_days", 1, 365),
        ("default_expiry_days", 1, 365),
    ):
        value = getattr(policy, name)
        if not low <= value <= high:
            problems.add(f"{field}.{name}", f"must be {low}..{high}")
    if policy.default_expiry_days > policy.max_expiry_days:
        problems.add(f"{field}.default_expiry_days", "must not exceed max_expiry_days")
    problems.raise_if_any()
