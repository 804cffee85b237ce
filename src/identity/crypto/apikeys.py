"""The plaintext API key format: ``<kind>_<env>_<lookup>_<secret><checksum>``.

``lookup`` is a random, non-secret, indexed handle so that a key alone finds its row in one
read; ``secret`` carries 196 random bits; ``checksum`` is the base62 CRC32 of everything before
it, so typos and random strings are rejected before any database or hash work, and secret
scanners can confirm a leaked key offline.
"""

from __future__ import annotations

import re
import secrets
import zlib
from dataclasses import dataclass

from identity.domain.model import KeyKind

_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
LOOKUP_LENGTH = 16
SECRET_LENGTH = 33  # 33 * log2(62) = 196 bits
CHECKSUM_LENGTH = 6  # 62**6 > 2**32
KIND_TAGS = {KeyKind.SECRET: "idk", KeyKind.PUBLISHABLE: "idp"}
_KINDS_BY_TAG = {tag: kind for kind, tag in KIND_TAGS.items()}
_FORMAT = re.compile(
    rf"(idk|idp)_(live|test)_([0-9A-Za-z]{{{LOOKUP_LENGTH}}})_"
    rf"([0-9A-Za-z]{{{SECRET_LENGTH}}})([0-9A-Za-z]{{{CHECKSUM_LENGTH}}})"
)
MAX_KEY_LENGTH = 80


@dataclass(frozen=True)
class ParsedKey:
    """A well-formed plaintext key, split into its parts."""

    kind: KeyKind
    environment: str
    lookup: str
    secret: str

    @property
    def prefix(self) -> str:
        """The non-secret start shown to people: kind, environment and lookup handle."""
        return display_prefix(self.kind, self.environment, self.lookup)


@dataclass(frozen=True)
class NewKey:
    """A freshly generated key: the plaintext (shown once) and its parts."""

    plaintext: str
    parsed: ParsedKey

    @property
    def last4(self) -> str:
        """The last four characters of the plaintext, for display."""
        return self.plaintext[-4:]


def display_prefix(kind: KeyKind, environment: str, lookup: str) -> str:
    """The non-secret start of a plaintext key: ``idk_live_<lookup>``."""
    return f"{KIND_TAGS[kind]}_{environment}_{lookup}"


def _random_base62(length: int) -> str:
    return "".join(secrets.choice(_BASE62) for _ in range(length))


def _checksum(body: str) -> str:
    value = zlib.crc32(body.encode("ascii"))
    chars = []
    for _ in range(CHECKSUM_LENGTH):
        value, digit = divmod(value, 62)
        chars.append(_BASE62[digit])
    return "".join(reversed(chars))


def generate(kind: KeyKind, environment: str, lookup: str | None = None) -> NewKey:
    """Make a new plaintext key; pass ``lookup`` to keep a key's handle across rotation."""
    parsed = ParsedKey(
        kind, environment, lookup or _random_base62(LOOKUP_LENGTH), _random_base62(SECRET_LENGTH)
    )
    body = f"{parsed.prefix}_{parsed.secret}"
    return NewKey(body + _checksum(body), parsed)


def parse(plaintext: str) -> ParsedKey | None:
    """Split a plaintext key, or return None when it is malformed or its checksum is wrong."""
    if len(plaintext) > MAX_KEY_LENGTH:
        return None
    match = _FORMAT.fullmatch(plaintext)
    if match is None:
        return None
    tag, environment, lookup, secret, checksum = match.groups()
    if not secrets.compare_digest(_checksum(plaintext[:-CHECKSUM_LENGTH]), checksum):
        return None
    return ParsedKey(_KINDS_BY_TAG[tag], environment, lookup, secret)
