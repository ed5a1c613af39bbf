"""What this interpreter has installed, in ``pip freeze`` form. Standard library only: the worker
records it inside the image (``result.json``) and a host-backend replay compares it with the record.
Reads package metadata, writes nothing."""

from __future__ import annotations


def packages() -> list[str]:
    """``Name==version`` of every distribution this interpreter sees, sorted case-insensitively."""
    from importlib import metadata

    return sorted(
        {f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions() if d.metadata["Name"]},
        key=str.lower,
    )
