"""Field masks (AIP-134): which fields an Update RPC changes."""

from __future__ import annotations

from collections.abc import Collection

from google.protobuf.field_mask_pb2 import FieldMask

from identity.domain.errors import invalid


def mask_paths(
    mask: FieldMask, allowed: Collection[str], *, allowed_prefixes: Collection[str] = ()
) -> list[str]:
    """The mask's paths, each checked against ``allowed``; an empty or unknown path is INVALID_ARGUMENT."""
    if not mask.paths:
        raise invalid("update_mask", f"is required; allowed paths: {', '.join(sorted(allowed))}")
    for path in mask.paths:
        if path not in allowed and not any(path.startswith(p) for p in allowed_prefixes):
            raise invalid("update_mask", f"unknown or immutable field {path!r}")
    return list(dict.fromkeys(mask.paths))
