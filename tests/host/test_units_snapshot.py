"""snapshot: the source a run used, as deterministic archive bytes; extraction treats it as data."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import pytest

from runner.core.errors import RunnerError
from runner.host import snapshot
from runner.host.hashing import sha256_file


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RUNNER_CACHE", str(tmp_path / "cache"))


def git(root: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t", *args],
        check=True,
        capture_output=True,
    )


@pytest.fixture
def project(tmp_path) -> Path:
    root = tmp_path / "proj"
    (root / "experiments").mkdir(parents=True)
    (root / "experiments" / "exp.py").write_text("def train(cfg, run_dir):\n    return {}\n")
    (root / "train.sh").write_text("#!/bin/sh\n")
    (root / "train.sh").chmod(0o755)
    (root / ".gitignore").write_text("data/\n")
    (root / "data").mkdir()
    (root / "data" / "big.bin").write_bytes(b"x" * 100)
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "commit", "-qm", "init")
    return root


def take(project: Path, dest: Path) -> snapshot.SnapshotInfo:
    dest.mkdir(parents=True, exist_ok=True)
    return snapshot.take(project, dest)


def test_same_tree_gives_the_same_bytes(project, tmp_path):
    a = take(project, tmp_path / "a")
    (project / "experiments" / "exp.py").touch()  # a new mtime is not a new tree
    b = take(project, tmp_path / "b")
    assert a.sha256 == b.sha256
    assert (tmp_path / "a" / a.archive).read_bytes() == (tmp_path / "b" / b.archive).read_bytes()
    assert a.sha256 == sha256_file(tmp_path / "a" / a.archive)
    assert a.commit and len(a.commit) == 40 and a.dirty is False


def test_uncommitted_edits_are_in_the_snapshot_and_marked_dirty(project, tmp_path):
    clean = take(project, tmp_path / "a")
    (project / "experiments" / "exp.py").write_text("def train(cfg, run_dir):\n    return {'x': 1}\n")
    (project / "new.py").write_text("NEW = 1\n")
    dirty = take(project, tmp_path / "b")
    assert dirty.dirty is True and dirty.sha256 != clean.sha256 and dirty.commit == clean.commit
    out = snapshot.extract(tmp_path / "b" / dirty.archive, dirty.sha256)
    assert "'x': 1" in (out / "experiments" / "exp.py").read_text()
    assert (out / "new.py").is_file()
    assert not (out / "data").exists()  # ignored files are never in a snapshot
    assert (out / "train.sh").stat().st_mode & 0o111  # the executable bit survives


def test_hash_mismatch_is_refused(project, tmp_path):
    info = take(project, tmp_path / "a")
    with pytest.raises(RunnerError, match="does not match"):
        snapshot.extract(tmp_path / "a" / info.archive, "0" * 64)


def _archive(tmp_path: Path, build) -> tuple[Path, str]:
    path = tmp_path / "evil.tar"
    with tarfile.open(path, "w") as tar:
        ok = tarfile.TarInfo("fine.py")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"ok"))
        tar.addfile(build())
    return path, sha256_file(path)


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


@pytest.mark.parametrize(
    "member, why",
    [
        (lambda: _member("/etc/evil"), "outside its root"),
        (lambda: _member("../evil"), "outside its root"),
        (lambda: _member("a/../../evil"), "outside its root"),
        (lambda: _member("link", tarfile.SYMTYPE, "/etc/passwd"), "link or special"),
        (lambda: _member("hard", tarfile.LNKTYPE, "fine.py"), "link or special"),
        (lambda: _member("dev", tarfile.CHRTYPE), "link or special"),
    ],
)
def test_unsafe_members_are_refused_and_nothing_is_left(tmp_path, member, why):
    path, digest = _archive(tmp_path, member)
    with pytest.raises(RunnerError, match=why):
        snapshot.extract(path, digest)
    snaps = tmp_path / "cache" / "snapshots"
    assert not snaps.exists() or list(snaps.iterdir()) == []


def test_a_damaged_archive_is_refused(tmp_path):
    path = tmp_path / "code.tar"
    path.write_bytes(b"not a tar archive at all" * 40)
    with pytest.raises(RunnerError, match="not a readable tar"):
        snapshot.extract(path, sha256_file(path))
    snaps = tmp_path / "cache" / "snapshots"
    assert not snaps.exists() or list(snaps.iterdir()) == []
