"""Seed sweeps against the real Docker engine: `python -m runner -m seed=…` runs one container and
manifest per seed through the runner_slots launcher, side by side in disjoint CPU slots, and
summarises them; a failing job is listed without stopping the others; re-running the sweep with
`hydra.launcher.skip_completed=true` skips what is already done."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from tests.conftest import FAST, manifest, run_runner

pytestmark = pytest.mark.docker


def _sweep(sweep_dir: Path, *args: str):
    return run_runner("-m", f"hydra.sweep.dir={sweep_dir}", *FAST, *args)


def _alone(run_dir: Path, *args: str) -> dict:
    proc = run_runner(f"hydra.run.dir={run_dir}", *FAST, *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return manifest(run_dir)


def _summary(sweep_dir: Path) -> dict:
    return json.loads((sweep_dir / "summary.json").read_text())


@pytest.fixture(scope="module")
def three_seeds(tmp_path_factory):
    """The main job swept over three seeds with the project's defaults (strict, 2 DDP processes)."""
    sweep_dir = tmp_path_factory.mktemp("sweep") / "seeds"
    proc = _sweep(sweep_dir, "seed=0,1,2")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "Traceback" not in proc.stderr
    return sweep_dir, proc


def test_seed_sweep_runs_one_container_and_manifest_per_seed(three_seeds):
    sweep_dir, proc = three_seeds
    runs = sorted(p.parent for p in sweep_dir.glob("*/manifest.json"))
    ms = [manifest(r) for r in runs]
    assert [m["determinism"]["seed"] for m in ms] == [0, 1, 2]
    assert all(m["status"] == "completed" and "model.pt" in m["outputs"] for m in ms)
    assert len({m["launch"]["container"] for m in ms}) == 3 and len({m["run_id"] for m in ms}) == 3
    # the image was resolved once, before the jobs: every job found the same image, none built it
    assert len({m["image"]["id"] for m in ms}) == 1 and not any(m["image"]["built_now"] for m in ms)
    # the default launcher handed each job a slot: two cores for 2 processes × 1 thread (strict)
    for m in ms:
        slot = m["config"]["launch"]["slot"]
        assert (
            m["launch"]["cpuset_cpus"] == slot["cpus"] and len(slot["cpus"].replace("-", ",").split(",")) == 2
        )
        assert slot["requested"]["cpuset_cpus"] is None
    assert "slot 0 (cpus" in proc.stdout + proc.stderr


def test_sweep_summary_holds_statistics_over_exactly_those_seeds(three_seeds):
    sweep_dir, _ = three_seeds
    s = _summary(sweep_dir)
    ms = {
        m["determinism"]["seed"]: m for m in (manifest(p.parent) for p in sweep_dir.glob("*/manifest.json"))
    }
    assert [j["seed"] for j in s["jobs"]] == [0, 1, 2] and s["counts"] == {"completed": 3}
    for j in s["jobs"]:
        assert Path(j["run_dir"]).is_dir() and j["metrics"] == ms[j["seed"]]["metrics"]
    assert all(f"seed={j['seed']}" in j["overrides"] and j["exit_code"] == 0 for j in s["jobs"])
    (group,) = s["groups"]
    assert sorted(group["seeds"]) == [0, 1, 2]
    for name in ("test_acc", "test_loss", "train_loss"):
        values = [ms[seed]["metrics"][name] for seed in (0, 1, 2)]
        st = group["metrics"][name]
        assert st["n"] == 3
        assert st["mean"] == pytest.approx(statistics.fmean(values), rel=1e-12)
        assert st["std"] == pytest.approx(statistics.stdev(values), rel=1e-9)
        assert (st["min"], st["max"]) == (min(values), max(values))
        half = 4.302653 * statistics.stdev(values) / 3**0.5  # t(0.975, df=2)
        assert st["ci95"] == pytest.approx([st["mean"] - half, st["mean"] + half], rel=1e-5)
    image = pytest.importorskip("matplotlib.image").imread(sweep_dir / "summary.png")
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 600


def test_a_seed_run_alone_has_the_bits_it_had_in_the_sweep(three_seeds, tmp_path):
    sweep_dir, _ = three_seeds
    in_sweep = next(
        m
        for m in (manifest(p.parent) for p in sweep_dir.glob("*/manifest.json"))
        if m["determinism"]["seed"] == 1
    )
    alone = _alone(tmp_path / "alone", "seed=1")
    assert alone["launch"]["cpuset_cpus"] is None
    assert alone["outputs"] == in_sweep["outputs"]
    assert alone["fingerprints"]["sha256"] == in_sweep["fingerprints"]["sha256"]


def test_a_sweep_job_replays_bit_identically_without_its_slot(three_seeds, tmp_path):
    sweep_dir, _ = three_seeds
    job = next(
        p.parent for p in sweep_dir.glob("*/manifest.json") if manifest(p.parent)["determinism"]["seed"] == 2
    )
    proc = run_runner(str(job), "--out", str(tmp_path / "replay"), module="runner.replay")
    assert proc.returncode == 0 and "verdict: bit-identical" in proc.stdout, proc.stderr[-3000:] + proc.stdout
    r, original = manifest(tmp_path / "replay"), manifest(job)
    assert (
        original["launch"]["cpuset_cpus"] and r["launch"]["cpuset_cpus"] is None
    )  # the slot's cores: not asked for
    assert "slot" not in r["config"]["launch"] and r["outputs"] == original["outputs"]


def test_jobs_side_by_side_a_failing_job_and_skip_completed(tmp_path):
    sweep_dir = tmp_path / "sweep"
    args = ("seed=-1,0,1", "hydra.launcher.slots=2", "launch.processes=1")
    proc = _sweep(sweep_dir, *args)
    assert proc.returncode == 1, proc.stderr[-3000:]  # not every job completed, and the command says so
    assert "Traceback" not in proc.stderr and "1 job(s) of the sweep did not complete" in proc.stderr

    # the bad job is listed with its exit status; the others ran to the end
    jobs = {j["name"]: j for j in _summary(sweep_dir)["jobs"]}
    assert jobs["0"]["status"] == "failed" and jobs["0"]["exit_code"] == 2 and "seed=-1" in jobs["0"]["error"]
    assert not (sweep_dir / "0" / "manifest.json").exists()
    a, b = manifest(sweep_dir / "1"), manifest(sweep_dir / "2")
    assert (
        a["status"] == b["status"] == "completed"
        and (jobs["1"]["status"], jobs["2"]["status"]) == ("completed",) * 2
    )

    # two jobs ran at once, on disjoint cores
    assert {a["launch"]["cpuset_cpus"], b["launch"]["cpuset_cpus"]} == {"0", "1"}
    assert (
        a["timings"]["started"] < b["timings"]["finished"]
        and b["timings"]["started"] < a["timings"]["finished"]
    )

    # ... and seed 0 computed the same bits as it does alone on the whole machine
    alone = _alone(tmp_path / "alone", "seed=0", "launch.processes=1")
    assert alone["outputs"] == a["outputs"] and alone["fingerprints"]["sha256"] == a["fingerprints"]["sha256"]

    # the same command with skip_completed: completed jobs are skipped, the failed one runs again
    before = {n: (sweep_dir / n / "manifest.json").read_bytes() for n in ("1", "2")}
    proc = _sweep(sweep_dir, *args, "hydra.launcher.skip_completed=true")
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert (proc.stdout + proc.stderr).count("completed before, skipped") == 2  # Hydra logs to stdout
    assert {
        n: (sweep_dir / n / "manifest.json").read_bytes() for n in ("1", "2")
    } == before  # same run_ids, untouched
    assert (sweep_dir / ".superseded" / "0.1" / "job_status.json").is_file()  # the last attempt is kept aside
    jobs = {j["name"]: j for j in _summary(sweep_dir)["jobs"]}
    assert [jobs[n]["status"] for n in ("0", "1", "2")] == ["failed", "completed", "completed"]
    assert not any(
        "skip_completed" in o for j in jobs.values() for o in j["overrides"]
    )  # the launcher's, not a job's
    assert jobs["1"]["run_id"] == a["run_id"] and jobs["2"]["run_id"] == b["run_id"]
