"""Bad input to `runner.replay`: one clear line, a non-zero exit, nothing run and nothing left behind.

No Docker needed: every case here must be refused before the engine is even contacted.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from runner.core.errors import RunnerError
from runner.host import snapshot
from tests.conftest import run_runner
from tests.run_records import code_tar, make_run


def _replay(tmp_path: Path, *args: str):
    cache = tmp_path / "cache"
    proc = run_runner(
        *args, module="runner.replay", env={"RUNNER_CACHE": str(cache), "DOCKER_HOST": "unix:///nonexistent"}
    )
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    return proc, lines, cache


def _assert_refused(proc, lines, run_dir: Path | None, cache: Path, *needles: str, code: int = 2):
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(lines) == 1 and lines[0].startswith("runner: error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert proc.stdout == ""
    if run_dir is not None:
        assert not (run_dir / "replays").exists()
    leftovers = list((cache / "snapshots").iterdir()) if (cache / "snapshots").exists() else []
    assert leftovers == []  # nothing half-extracted


def test_no_manifest(tmp_path):
    (tmp_path / "empty").mkdir()
    proc, lines, cache = _replay(tmp_path, str(tmp_path / "empty"))
    _assert_refused(proc, lines, tmp_path / "empty", cache, "no manifest at")
    proc, lines, cache = _replay(tmp_path, str(tmp_path / "does-not-exist"))
    _assert_refused(proc, lines, None, cache, "no manifest at")


def test_unparsable_json(tmp_path):
    run = make_run(tmp_path / "run")
    (run / "manifest.json").write_text('{"schema_version": 1, "run_id": ')
    proc, lines, cache = _replay(tmp_path, str(run))
    _assert_refused(proc, lines, run, cache, "is not valid JSON")


def test_unknown_schema_version(tmp_path):
    run = make_run(tmp_path / "run", schema_version=99)
    proc, lines, cache = _replay(tmp_path, str(run / "manifest.json"))
    _assert_refused(proc, lines, run, cache, "schema version 99", "reads version 1")


def test_invalid_manifest(tmp_path):
    run = make_run(tmp_path / "run", status="exploded")
    proc, lines, cache = _replay(tmp_path, str(run))
    _assert_refused(proc, lines, run, cache, "not a valid manifest", "status")


def test_snapshot_altered_after_the_run(tmp_path):
    run = make_run(tmp_path / "run")
    with tarfile.open(run / "code.tar", "a") as tar:  # someone slipped a file into the snapshot
        tar.add(run / "manifest.json", arcname="sneaky.py")
    proc, lines, cache = _replay(tmp_path, str(run))
    _assert_refused(proc, lines, run, cache, "does not match the manifest", "refusing to run altered code")


def test_tampered_manifest_hash(tmp_path):
    run = make_run(tmp_path / "run")
    m = json.loads((run / "manifest.json").read_text())
    m["code"]["snapshot_sha256"] = "0" * 64
    (run / "manifest.json").write_text(json.dumps(m))
    proc, lines, cache = _replay(tmp_path, str(run))
    _assert_refused(proc, lines, run, cache, "does not match the manifest")


def test_snapshot_missing(tmp_path):
    run = make_run(tmp_path / "run")
    (run / "code.tar").unlink()
    proc, lines, cache = _replay(tmp_path, str(run))
    _assert_refused(proc, lines, run, cache, "code snapshot missing")


def test_manifest_pointing_outside_its_run_dir(tmp_path):
    run = make_run(tmp_path / "run")
    m = json.loads((run / "manifest.json").read_text())
    m["code"]["snapshot"] = "../code.tar"
    (run / "manifest.json").write_text(json.dumps(m))
    proc, lines, cache = _replay(tmp_path, str(run))
    _assert_refused(proc, lines, run, cache, "not a file name inside the run dir")


def test_record_without_a_code_snapshot(tmp_path):
    run = make_run(tmp_path / "run", code=None)
    proc, lines, cache = _replay(tmp_path, str(run))
    _assert_refused(proc, lines, run, cache, "records no code snapshot")


@pytest.mark.parametrize(
    ("members", "links", "needle"),
    [
        ([("/etc/runner-evil", b"x")], [], "outside its root"),
        ([("../runner-evil", b"x")], [], "outside its root"),
        ([("ok/../../runner-evil", b"x")], [], "outside its root"),
        (None, [("link", "/etc/passwd", tarfile.SYMTYPE)], "link or special file"),
        (None, [("up", "../../outside", tarfile.SYMTYPE)], "link or special file"),
        (None, [("hard", "/etc/passwd", tarfile.LNKTYPE)], "link or special file"),
        (None, [("dev", "", tarfile.CHRTYPE)], "link or special file"),
    ],
    ids=["absolute", "dotdot", "nested-dotdot", "symlink-absolute", "symlink-up", "hardlink", "device"],
)
def test_snapshot_entries_outside_the_root_are_refused(tmp_path, members, links, needle):
    run = make_run(tmp_path / "run", members=(members or []) + [("train.py", b"")], links=links)
    proc, lines, cache = _replay(tmp_path, str(run))
    _assert_refused(proc, lines, run, cache, needle)
    assert not (tmp_path / "runner-evil").exists() and not Path("/etc/runner-evil").exists()


def test_extract_checks_the_hash_before_reading_the_archive(tmp_path, monkeypatch):
    monkeypatch.setenv("RUNNER_CACHE", str(tmp_path / "cache"))
    digest = code_tar(tmp_path / "code.tar", [("../x", b"")])
    with pytest.raises(RunnerError, match="does not match"):
        snapshot.extract(tmp_path / "code.tar", "1" * 64)
    with pytest.raises(RunnerError, match="outside its root"):
        snapshot.extract(tmp_path / "code.tar", digest)
    assert list((tmp_path / "cache" / "snapshots").iterdir()) == []
    good = code_tar(tmp_path / "good.tar", [("a/b.py", b"print(1)\n")])
    out = snapshot.extract(tmp_path / "good.tar", good)
    assert (out / "a" / "b.py").read_bytes() == b"print(1)\n" and out.name == good


def test_replay_refuses_a_run_dir_that_already_holds_a_manifest(tmp_path):
    run = make_run(tmp_path / "run")
    other = make_run(tmp_path / "other")
    proc, lines, cache = _replay(tmp_path, str(run), "--out", str(other))
    assert proc.returncode == 2 and "already holds a manifest" in lines[-1] and "Traceback" not in proc.stderr


def test_replay_dir_that_cannot_be_created_is_refused_early(tmp_path):
    run = make_run(tmp_path / "run")
    (tmp_path / "file").write_text("")
    proc, lines, cache = _replay(tmp_path, str(run), "--out", str(tmp_path / "file" / "replay"))
    _assert_refused(proc, lines, run, cache, "cannot create the replay's run dir", "--out")
