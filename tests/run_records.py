"""Hand-made run dirs for replay/diff tests that need a record but not a real training run."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from runner.core import manifest
from runner.core.digests import record_digest
from runner.host.hashing import sha256_file


def resealed(m: dict) -> str:
    """A manifest edited on purpose, with its digest written again: the JSON text of a record
    whose content is consistent, so what a test changed is checked by what it is aimed at."""
    return json.dumps({**m, "digest": record_digest(m)})


def code_tar(
    path: Path, members: list[tuple[str, bytes]] | None = None, links: list[tuple[str, str, bytes]] = ()
) -> str:
    """Write a tar archive of (name, bytes) files, plus (name, target, type) links; return its sha256."""
    members = (
        [("experiments/__init__.py", b""), ("train.py", b"print('hi')\n")] if members is None else members
    )
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target, kind in links:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = target
            tar.addfile(info)
    return sha256_file(path)


def manifest_dict(snapshot_sha256: str, **changes) -> dict:
    """A schema-valid manifest of a completed containerized run."""
    m = {
        "schema_version": 1,
        "run_id": "made-by-hand",
        "status": "completed",
        "exit_code": 0,
        "command": ["python", "-m", "runner"],
        "overrides": [],
        "config": {"seed": 0, "experiment": {"name": "x", "script": "train.py"}, "launch": {"processes": 1}},
        "experiment": {"name": "x", "script": "train.py"},
        "code": {
            "commit": None,
            "dirty": False,
            "snapshot": "code.tar",
            "snapshot_sha256": snapshot_sha256,
            "files": 2,
        },
        "containerized": True,
        "launch": {"backend": "docker"},
        "environment": {"PYTHONHASHSEED": "0"},
        "determinism": {"profile": {"name": "strict", "promises_bitwise": True}, "seed": 0},
        "host": {"hostname": "h"},
        "packages": ["torch==2.13.0"],
        "outputs": {"model.pt": {"sha256": "a" * 64, "bytes": 3}},
        "timings": {"started": 1.0, "finished": 2.0, "total_seconds": 1.0},
    }
    m.update(changes)
    return m


def make_run(run_dir: Path, members=None, links=(), **changes) -> Path:
    """A run dir with a code snapshot and a manifest that records it (``changes`` edit the manifest)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    digest = code_tar(run_dir / "code.tar", members, list(links))
    (run_dir / "manifest.json").write_text(json.dumps(manifest_dict(digest, **changes)))
    return run_dir


def record(**over) -> dict:
    r = {
        "schema_version": manifest.SCHEMA_VERSION,
        "run_id": "r-1",
        "status": "completed",
        "exit_code": 0,
        "command": ["python", "-m", "runner"],
        "overrides": ["seed=1"],
        "config": {"seed": 1},
        "experiment": {"target": "experiments.mnist:train"},
        "containerized": True,
        "launch": {"backend": "docker"},
        "environment": {"PYTHONHASHSEED": "0"},
        "determinism": {"profile": {"name": "strict"}, "seed": 1},
        "host": {"cpu": {"model": "x"}},
        "outputs": {"model.pt": {"sha256": "a" * 64, "bytes": 3}},
        "timings": {"started": 1.0, "finished": 2.0, "total_seconds": 1.0},
    }
    r.update(over)
    return r
