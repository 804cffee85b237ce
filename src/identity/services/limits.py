"""Size limits on every string and repeated field of every identity.v1 request, at the door.

The use cases judge what a value means (a name is at most 200 characters, a scope follows the
grammar, at most 50 scopes). This is the coarser rule under them, kept in one place so that no
field escapes it, a field added later included: no string is longer than :data:`MAX_STRING`
characters and no list holds more than :data:`MAX_ITEMS` elements, unless
:data:`LONGER_FIELDS` lets a field be longer. So every request costs bounded work and every value
that may be stored or echoed is bounded, whichever RPC carries it.
"""

from __future__ import annotations

import functools

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from identity.domain.errors import FieldViolation, invalid_fields
from identity.domain.scopes import MAX_SCOPE_LENGTH
from identity.domain.validation import MAX_LIST
from identity.tokens import MAX_TOKEN_LENGTH

MAX_STRING = 1024
MAX_ITEMS = 100

# Fields that legitimately hold more than MAX_STRING characters: full field name -> limit.
LONGER_FIELDS = {
    # A credential may be a JWT.
    "identity.v1.CheckRequest.credential": MAX_TOKEN_LENGTH,
    "identity.v1.BatchCheckRequest.credential": MAX_TOKEN_LENGTH,
    "identity.v1.IntrospectTokenRequest.token": MAX_TOKEN_LENGTH,
    "identity.v1.RevokeTokenRequest.token": MAX_TOKEN_LENGTH,
    # Space-separated scopes: as many as a key may hold, each as long as a scope may be.
    "identity.v1.ExchangeClientCredentialsRequest.scope": MAX_LIST * (MAX_SCOPE_LENGTH + 1),
}

# An encoded request this small breaks no limit: each element of a list takes a byte or more, and
# so does each character of a string. A warm exchange's request is smaller, and is let through
# without a look at its fields.
_WITHIN_EVERY_LIMIT = min(MAX_ITEMS, MAX_STRING, *LONGER_FIELDS.values())


def max_length(field: FieldDescriptor) -> int:
    """The most characters a string field (or each element of a repeated one) may hold."""
    return LONGER_FIELDS.get(field.full_name, MAX_STRING)


def check_sizes(request: Message) -> None:
    """INVALID_ARGUMENT naming every field of ``request`` that is too long or has too many elements."""
    if request.ByteSize() <= _WITHIN_EVERY_LIMIT:
        return
    violations: list[FieldViolation] = []
    _check(request, "", violations)
    if violations:
        raise invalid_fields(violations)


def _check(message: Message, prefix: str, violations: list[FieldViolation]) -> None:
    # ListFields gives only the fields that are set: a small request costs a few lookups (~3 µs
    # for a Check), and nothing is built unless a field is refused.
    strings, messages = _plan(message.DESCRIPTOR)
    for field, value in message.ListFields():
        path, repeated = prefix + field.name, field.is_repeated
        if repeated and len(value) > MAX_ITEMS:
            violations.append(FieldViolation(path, f"more than {MAX_ITEMS} items"))
            continue
        values = value if repeated else (value,)
        limit = strings.get(field)
        if limit is not None:
            for i, text in enumerate(values):
                if len(text) > limit:
                    where = f"{path}[{i}]" if repeated else path
                    violations.append(FieldViolation(where, f"longer than {limit} characters"))
        elif field in messages:
            for i, child in enumerate(values):
                _check(child, f"{path}[{i}]." if repeated else f"{path}.", violations)


@functools.cache
def _plan(descriptor: Descriptor) -> tuple[dict[FieldDescriptor, int], frozenset[FieldDescriptor]]:
    """A message type's string fields with their limits, and its message fields to look inside."""
    strings = {f: max_length(f) for f in descriptor.fields if f.type == FieldDescriptor.TYPE_STRING}
    messages = frozenset(f for f in descriptor.fields if f.type == FieldDescriptor.TYPE_MESSAGE)
    return strings, messages
