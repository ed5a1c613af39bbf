"""``runner ls``: the run dirs under a directory, each as its files say (no engine).

Run dirs here are records made by hand (tests/run_records.py) with the states a real tree of runs
holds: completed and failed runs, a sweep's jobs, replays with verdicts, an edited manifest, a dir
a runner claimed that has no manifest, a manifest from another schema, one that is not JSON."""

from __future__ import annotations

import json
from pathlib import Path

from runner.core import compare, layout, run_list
from runner.host import run_index
from tests.conftest import run_runner
from tests.run_records import manifest_dict, resealed


def _record(run_dir: Path, *, started: float, seed: int = 0, sealed: bool = True, **changes) -> Path:
    run_dir.mkdir(parents=True)
    m = manifest_dict(
        "d" * 64,
        config={"seed": seed, "experiment": {"name": "mnist"}},
        experiment={"name": "mnist", "script": "train.py"},
        timings={"started": started, "finished": started + 1, "total_seconds": 1.0},
        **changes,
    )
    (run_dir / layout.MANIFEST).write_text(resealed(m) if sealed else json.dumps(m))
    return run_dir


def _replay(run_dir: Path, name: str, identical: bool | str) -> None:
    """A replay's dir with its ``verdict.json`` as a replay writes it (``identical`` text: as is)."""
    d = run_dir / layout.REPLAYS_DIR / name
    d.mkdir(parents=True)
    if isinstance(identical, str):
        (d / layout.VERDICT).write_text(identical)
        return
    verdict = compare.Verdict(identical, "completed", 1, [], identical, None, [], [], [], [])
    (d / layout.VERDICT).write_text(
        json.dumps(compare.VerdictFile(str(run_dir), str(d), "reused", None, verdict).to_json())
    )


def _tree(root: Path) -> dict[str, Path]:
    runs = {
        "old": _record(
            root / "mnist" / "old",
            started=1000.0,
            metrics={"test_loss": 0.5, "test_acc": 0.9, "samples_per_s": 1234.5, "global_step": 12},
        ),
        "job0": _record(root / "sweep" / "0", started=2000.0, seed=3, status="failed", exit_code=1),
        "edited": _record(root / "mnist" / "edited", started=3000.0, sealed=True),
        "nodigest": _record(root / "mnist" / "nodigest", started=4000.0, sealed=False),
    }
    m = json.loads((runs["edited"] / layout.MANIFEST).read_text())
    m["seed_note"] = "added by hand"  # the digest no longer matches
    (runs["edited"] / layout.MANIFEST).write_text(json.dumps(m))
    _replay(runs["old"], "2026-01-01_00-00-00-000001", True)
    _replay(runs["old"], "2026-01-02_00-00-00-000001", False)
    _replay(runs["old"], "2026-01-03_00-00-00-000001", "{torn")
    _replay(runs["old"], "2026-01-04_00-00-00-000001-locate-a", False)  # a traced replay: no verdict shown
    claimed = root / "mnist" / "claimed"
    claimed.mkdir()
    (claimed / layout.CLAIM).touch()
    runs["claimed"] = claimed
    other = _record(root / "mnist" / "other-schema", started=5000.0)
    (other / layout.MANIFEST).write_text(json.dumps({"schema_version": 99}))
    runs["other"] = other
    (root / "sweep" / ".hydra").mkdir()
    (root / "sweep" / ".hydra" / layout.MANIFEST).write_text("{}")  # hidden: not a run
    copied = root / "mlartifacts" / "mnist" / "abc" / "artifacts"  # runner export mlflow's copy
    copied.mkdir(parents=True)
    (copied / layout.MANIFEST).write_text("{}")
    return runs


def test_the_rows_say_what_each_run_dir_holds(tmp_path):
    runs = _tree(tmp_path)
    rows = {Path(r.dir): r for r in run_index.rows(tmp_path)}
    assert set(rows) == set(runs.values())
    old = rows[runs["old"]]
    assert (old.status, old.experiment, old.seed, old.digest, old.started) == (
        "completed",
        "mnist",
        0,
        "ok",
        1000.0,
    )
    assert [r.bit_identical for r in old.replays] == [True, False, None]
    assert old.replays_cell() == "1 same, 1 differ, 1 unreadable"
    assert run_list.key_metrics(old.metrics) == {"test_acc": 0.9, "test_loss": 0.5}  # no speed, no counter
    assert old.metrics_cell() == "test_acc=0.9\ntest_loss=0.5"
    assert (rows[runs["job0"]].status, rows[runs["job0"]].seed) == ("failed", 3)
    assert rows[runs["edited"]].digest == "edited" and rows[runs["nodigest"]].digest == "none"
    assert rows[runs["claimed"]].status == "incomplete" and rows[runs["claimed"]].digest is None
    assert rows[runs["other"]].status == "unreadable" and "schema version 99" in rows[runs["other"]].note
    ordered = [Path(r.dir) for r in run_index.rows(tmp_path)]
    assert ordered[:4] == [runs["old"], runs["job0"], runs["edited"], runs["nodigest"]]  # by start time


def test_a_run_dir_itself_lists_as_one_run(tmp_path):
    run = _record(tmp_path / "r", started=1.0)
    assert [Path(r.dir) for r in run_index.rows(run)] == [run]


def test_runner_ls_prints_a_table_and_json(tmp_path):
    runs = _tree(tmp_path)
    proc = run_runner("ls", str(tmp_path), module="runner.cli")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"6 run(s) under {tmp_path}")
    old = next(line for line in lines if "mnist/old" in line)
    cells = [c.strip() for c in old.split("│")[1:-1]]
    assert cells[2:5] == ["mnist", "0", "completed"] and cells[7] == "ok"
    assert cells[5] == "test_acc=0.9" and cells[6].startswith("1 same, 1 differ")
    assert any("EDITED" in line for line in lines if "mnist/edited" in line)
    assert any("incomplete" in line for line in lines if "mnist/claimed" in line)

    proc = run_runner("ls", str(tmp_path), "--json", module="runner.cli")
    got = {Path(r["dir"]): r for r in json.loads(proc.stdout)}
    assert got[runs["old"]]["metrics"]["samples_per_s"] == 1234.5  # every metric, every digit
    assert got[runs["old"]]["replays"][0]["bit_identical"] is True
    assert got[runs["claimed"]]["status"] == "incomplete"


def test_runner_ls_of_a_missing_dir_is_one_line(tmp_path):
    proc = run_runner("ls", str(tmp_path / "nope"), module="runner.cli")
    assert proc.returncode == 2 and proc.stderr == f"runner: error: no directory at {tmp_path / 'nope'}\n"


def test_an_unreadable_manifest_is_a_row_not_an_error(tmp_path):
    run = _record(tmp_path / "r", started=1.0)
    (run / layout.MANIFEST).write_text("{not json")
    _record(tmp_path / "s", started=2.0)
    rows = run_index.rows(tmp_path)
    assert [r.status for r in rows] == ["completed", "unreadable"]
    assert rows[1].note.startswith("manifest.json: ")


def test_a_running_record_whose_runner_is_gone_lists_as_abandoned(tmp_path):
    """A record still saying ``running`` reads ``running`` while a runner holds the dir's claim, and
    ``abandoned`` once none does (the runner was killed outright: the kernel dropped its lock)."""
    import fcntl
    import os

    run = _record(tmp_path / "r", started=1000.0, status="running")
    fd = os.open(run / layout.CLAIM, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert run_index.read_row(run).status == "running"
    finally:
        os.close(fd)  # the lock goes with the descriptor, as with a killed runner
    assert run_index.read_row(run).status == "abandoned"
