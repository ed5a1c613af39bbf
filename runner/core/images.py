"""Image identity, pure: which Dockerfile, lock and base define an image, and its content-hash tag.

The tag is a hash of everything that defines the image — the Dockerfile's bytes, the
hash-pinned lock's bytes, the base image's reference, digest and id, the build args — so an
existing tag *is* the proof that no build is needed, and no build context is ever sent for it.
The wheels need no hashing of their own: the lock pins each one's sha256.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from runner.core.digests import sha256_bytes, sha256_json
from runner.core.errors import EXIT_USAGE, RunnerError

TAG_REPO = "runner"
HASH_SCHEMA = 1
# image.registry: HOST[:PORT]/REPOSITORY — a host with a dot, a port or named localhost, as Docker
# tells a registry from a Docker Hub namespace; lower case, no tag and no digest of its own
_REGISTRY = re.compile(
    r"^(localhost|[a-z0-9-]+(\.[a-z0-9-]+)+|[a-z0-9.-]+:[0-9]+)(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)+$"
)
_DIGEST_REF = re.compile(r"^[^@\s]+@sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class ImagePlan:
    kind: str  # cpu | cuda
    dockerfile: str  # path relative to the project
    dockerfile_sha256: str
    lock: str
    lock_sha256: str
    base_ref: str
    base_digest: str | None
    base_id: str
    python_version: str
    build_args: dict[str, str] = field(default_factory=dict)

    @property
    def content_hash(self) -> str:
        return sha256_json(
            {
                "schema": HASH_SCHEMA,
                "dockerfile": self.dockerfile_sha256,
                "lock": self.lock_sha256,
                "base": [self.base_ref, self.base_digest, self.base_id],
                "build_args": self.build_args,
            }
        )

    @property
    def tag(self) -> str:
        return f"{TAG_REPO}:{self.kind}-{self.content_hash[:20]}"

    @property
    def base(self) -> str:
        """What FROM names: the digest-pinned reference when one is recorded."""
        if self.base_digest and "@" not in self.base_ref:
            return f"{self.base_ref.split(':')[0]}@{self.base_digest}"
        return self.base_ref

    def labels(self) -> dict[str, str]:
        return {
            "org.runner.content-hash": self.content_hash,
            "org.runner.dockerfile-sha256": self.dockerfile_sha256,
            "org.runner.lock-sha256": self.lock_sha256,
            "org.runner.base": self.base_ref,
            "org.runner.base-id": self.base_id,
        }

    def to_dict(self) -> dict[str, str | dict[str, str] | None]:
        """The plan's fields, its tag and content hash (what an image record holds of them)."""
        return {**asdict(self), "tag": self.tag, "content_hash": self.content_hash}


def choose_kind(requested: str, gpus: Any) -> str:
    """`auto` means cuda exactly when the launch asks for GPUs."""
    if requested not in ("cpu", "cuda", "auto"):
        raise RunnerError(f"image.kind={requested!r} must be cpu, cuda or auto", EXIT_USAGE)
    if requested != "auto":
        return requested
    return "cuda" if gpu_count_requested(gpus) else "cpu"


def gpu_count_requested(gpus: Any) -> int:
    if gpus in (None, 0, False, "", "none"):
        return 0
    if isinstance(gpus, int) and not isinstance(gpus, bool):
        if gpus < 0:
            raise RunnerError(f"launch.gpus={gpus} must be 0, a count, or a list of GPU indices", EXIT_USAGE)
        return gpus
    if isinstance(gpus, (list, tuple)):
        return len(gpus)
    if gpus == "all":
        return -1  # every GPU the host has
    raise RunnerError(f"launch.gpus={gpus!r} must be 0, a count, 'all' or a list of GPU indices", EXIT_USAGE)


def plan(variant: Mapping[str, Any], kind: str, project_root: Path, base_id: str) -> ImagePlan:
    """An ImagePlan from an image config variant. Reads two files; otherwise pure."""
    files = {}
    for key in ("dockerfile", "lock"):
        path = project_root / str(variant[key])
        if not path.is_file():
            raise RunnerError(f"image.{kind}: {key} {variant[key]} not found in {project_root}", EXIT_USAGE)
        files[key] = sha256_bytes(path.read_bytes())
    base = variant["base"]
    return ImagePlan(
        kind=kind,
        dockerfile=str(variant["dockerfile"]),
        dockerfile_sha256=files["dockerfile"],
        lock=str(variant["lock"]),
        lock_sha256=files["lock"],
        base_ref=str(base["ref"]),
        base_digest=base.get("digest"),
        base_id=base_id,
        python_version=str(variant.get("python_version", "3.11")),
        build_args={str(k): str(v) for k, v in (variant.get("build_args") or {}).items()},
    )


def check_registry(value: Any) -> str | None:
    """``image.registry`` as given (None: images stay on this machine), or one line saying what is wrong."""
    if value in (None, ""):
        return None
    if not isinstance(value, str) or not _REGISTRY.match(value):
        raise RunnerError(
            f"image.registry={value!r}: want HOST[:PORT]/REPOSITORY, e.g. 127.0.0.1:5000/runner "
            "(no tag or digest: the runner tags each image with its content hash)",
            EXIT_USAGE,
        )
    return value


def registry_target(registry: str, tag: str) -> str:
    """Where the image ``tag`` (``runner:cpu-…``) is pushed: the registry's repository, same tag."""
    return f"{registry}:{tag.rsplit(':', 1)[-1]}"


def by_digest(ref: str, digest: str) -> str:
    """``repository@sha256:…``: the reference that names exactly one content, whatever tags move."""
    repository = ref.rsplit(":", 1)[0] if ":" in ref.rsplit("/", 1)[-1] else ref
    out = f"{repository.split('@', 1)[0]}@{digest}"
    if not _DIGEST_REF.match(out):
        raise RunnerError(f"{digest!r} is not a sha256 content digest (from pushing {ref})", EXIT_USAGE)
    return out
