"""sha256 of bytes and of canonical JSON: the content hashes records and image tags are made of. Pure."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_json(obj: Any) -> str:
    """Hash of a JSON-able object in canonical form (sorted keys, no whitespace)."""
    return sha256_bytes(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode())


DIGEST_FIELD = "digest"
DIGEST_PREFIX = "sha256:"


def record_digest(record: Mapping[str, Any]) -> str:
    """``sha256:<hex>`` of a record's canonical JSON, every field but :data:`DIGEST_FIELD` itself.

    A manifest carries this digest of its own content, so a hand edit (one value changed, a
    field removed) shows. It is not a signature: whoever edits the file can recompute it; it
    tells an accident or a careless edit apart from the written record, nothing more."""
    return DIGEST_PREFIX + sha256_json({k: v for k, v in record.items() if k != DIGEST_FIELD})


def check_digest(record: Mapping[str, Any]) -> tuple[bool, str | None]:
    """(edited, note) for a record as read back. ``edited`` is True when the recorded digest no
    longer matches the content; ``note`` says so in words, or that the record carries no digest
    (written before manifests had one: accepted, but its content cannot be checked)."""
    recorded = record.get(DIGEST_FIELD)
    if recorded is None:
        return (
            False,
            "records no digest (written before manifests carried one): its content cannot be checked",
        )
    actual = record_digest(record)
    if recorded != actual:
        return True, (
            f"was edited after its run: its content hashes to {actual[:19]}…, "
            f"not to the digest it records ({str(recorded)[:19]}…)"
        )
    return False, None
