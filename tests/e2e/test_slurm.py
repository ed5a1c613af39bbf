"""Sweeps on the real Slurm cluster `make slurm` starts (nodes n1, n2 on this machine, one core
each) and the real Docker engine: `hydra/launcher=slurm` runs each job as a Slurm job whose
container is pinned to its allocation; the bits equal the same seeds run locally; a job stopped
by SIGTERM keeps its checkpoint, and requeued, resumes to the bits of an uninterrupted run; a
run made on the cluster replays without it; a bad cluster setting is one line. An unprivileged
user (``runner-ci``) submits a sweep and a two-node run under Charliecloud: the same bits, each job
on the image the sweep resolved, by its id."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.core.layout import latest_checkpoint
from runner.core.spec import RUN_ID_LABEL
from runner.host.charliecloud_engine import CharliecloudEngine
from tests import ci_user
from tests.conftest import FAST, ROOT, manifest, run_runner
from tests.live_runs import wait_for

pytestmark = [pytest.mark.slurm, pytest.mark.docker]

ONE_CORE = [*FAST, "launch.processes=1"]  # each Slurm node here has one core
SEEDS = (0, 1, 2)
LONGER = [
    "trainer.max_steps=60",
    "model.train_samples=4096",
    "fingerprints.every_k_steps=4",
    "launch.checkpoint_every_n_steps=4",
    "launch.processes=1",
]


def _slurm_up() -> None:
    if shutil.which("sinfo") is None or subprocess.run(["sinfo"], capture_output=True).returncode != 0:
        pytest.fail("no Slurm cluster answers: `make slurm` (scripts/ensure-slurm.sh) starts the local one")


def _squeue(job_id: str) -> str | None:
    out = subprocess.run(
        ["squeue", "-h", "-r", "-t", "all", "-o", "%T", "-j", job_id], capture_output=True, text=True
    )
    return out.stdout.strip() or None


def _job_id(run_dir: Path, proc: subprocess.Popen) -> str:
    """The Slurm job a sweep job runs in, as its console.log names it once the job has started."""

    def started():
        text = (run_dir / "console.log").read_text() if (run_dir / "console.log").is_file() else ""
        return next(
            (line.split()[3] for line in text.splitlines() if line.startswith("runner: Slurm job")), None
        )

    return wait_for(started, timeout=300, every=0.5, proc=proc)


@pytest.fixture(scope="module")
def local_seeds(tmp_path_factory) -> dict[int, dict]:
    """The three seeds run on this machine (the local launcher), one process each."""
    sweep_dir = tmp_path_factory.mktemp("local") / "seeds"
    proc = run_runner("-m", f"hydra.sweep.dir={sweep_dir}", *ONE_CORE, "seed=0,1,2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {
        manifest(p.parent)["determinism"]["seed"]: manifest(p.parent)
        for p in sweep_dir.glob("*/manifest.json")
    }


@pytest.fixture(scope="module")
def slurm_seeds(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    _slurm_up()
    sweep_dir = tmp_path_factory.mktemp("slurm") / "seeds"
    proc = run_runner("-m", "hydra/launcher=slurm", f"hydra.sweep.dir={sweep_dir}", *ONE_CORE, "seed=0,1,2")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "Traceback" not in proc.stderr
    return sweep_dir, proc


def test_a_slurm_sweep_has_the_bits_of_the_same_seeds_run_locally(slurm_seeds, local_seeds):
    sweep_dir, proc = slurm_seeds
    ms = {
        m["determinism"]["seed"]: m for m in (manifest(p.parent) for p in sweep_dir.glob("*/manifest.json"))
    }
    assert sorted(ms) == list(SEEDS)
    for seed, m in ms.items():
        assert m["status"] == "completed"
        assert m["outputs"]["model.pt"] == local_seeds[seed]["outputs"]["model.pt"], f"seed {seed}"
        assert m["fingerprints"]["sha256"] == local_seeds[seed]["fingerprints"]["sha256"], f"seed {seed}"
        assert local_seeds[seed]["cluster"] is None
    # one Slurm array for the sweep; each job recorded where it ran and was pinned to its allocation
    arrays = {m["cluster"]["array_job_id"] for m in ms.values()}
    assert len(arrays) == 1 and None not in arrays
    assert sorted(m["cluster"]["array_task_id"] for m in ms.values()) == [0, 1, 2]
    for m in ms.values():
        c = m["cluster"]
        assert c["scheduler"] == "slurm" and c["partition"] == "debug" and c["node"] in ("n1", "n2")
        assert c["nodelist"] == c["node"] and c["allocation"]["cpus_on_node"] == 1
        assert m["launch"]["cpuset_cpus"] == ",".join(map(str, c["allocation"]["cpu_ids"]))
        assert m["config"]["launch"]["slot"]["requested"]["cpuset_cpus"] is None
    # the image was resolved once, before submitting: no job built it
    assert len({m["image"]["id"] for m in ms.values()}) == 1 and not any(
        m["image"]["built_now"] for m in ms.values()
    )
    summary = json.loads((sweep_dir / "summary.json").read_text())
    assert summary["counts"] == {"completed": 3} and len(summary["jobs"]) == 3, summary
    assert "→ Slurm job" in proc.stderr + proc.stdout


def test_a_slurm_sweep_run_again_skips_its_completed_jobs(slurm_seeds):
    sweep_dir, _ = slurm_seeds
    before = sorted((sweep_dir / ".slurm").glob("*_submission.sh"))
    proc = run_runner(
        "-m",
        "hydra/launcher=slurm",
        f"hydra.sweep.dir={sweep_dir}",
        *ONE_CORE,
        "seed=0,1,2",
        "hydra.launcher.skip_completed=true",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (proc.stdout + proc.stderr).count("completed before, skipped") == 3
    assert sorted((sweep_dir / ".slurm").glob("*_submission.sh")) == before, "nothing new was submitted"


def test_a_slurm_run_replays_bit_identically_without_slurm(slurm_seeds, tmp_path):
    sweep_dir, _ = slurm_seeds
    job = next(p.parent for p in sorted(sweep_dir.glob("*/manifest.json")))
    proc = _replay_without_slurm(job, tmp_path / "replay")
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = manifest(tmp_path / "replay")
    assert r["cluster"] is None and "slot" not in r["config"]["launch"]
    assert r["outputs"] == manifest(job)["outputs"]


def _replay_without_slurm(run_dir: Path, out: Path) -> subprocess.CompletedProcess:
    """``runner.replay`` on a machine without Slurm: no SLURM_* variables, no Slurm commands."""
    no_slurm = {k: v for k, v in os.environ.items() if not k.startswith("SLURM")}
    no_slurm["PATH"] = os.pathsep.join(
        p for p in no_slurm["PATH"].split(os.pathsep) if not (Path(p) / "sinfo").exists()
    )
    return subprocess.run(
        [sys.executable, "-m", "runner.replay", str(run_dir), "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=no_slurm,
    )


def _start_sweep(sweep_dir: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "runner",
            "-m",
            "hydra/launcher=slurm",
            f"hydra.sweep.dir={sweep_dir}",
            "seed=0",
            *LONGER,
            *args,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _checkpoint_after(run_dir: Path, step: int, proc: subprocess.Popen) -> int:
    found = wait_for(
        lambda: (c := latest_checkpoint(run_dir / "checkpoints")) and c[0] > step and c,
        timeout=300,
        every=0.2,
        proc=proc,
    )
    return found[0]


def test_sigterm_keeps_the_checkpoint_and_requeued_jobs_resume_to_the_same_bits(tmp_path):
    """``scancel --signal=TERM``: the run is recorded interrupted with its checkpoint; the sweep run
    again resumes it in place; a preemption then (``scontrol requeue``: SIGTERM, back in the
    queue) is followed by the sweep, and the job resumes again. The end: an uninterrupted run's bits."""
    _slurm_up()
    sweep_dir, whole = tmp_path / "sweep", tmp_path / "whole"
    run_dir = sweep_dir / "0"
    reference = subprocess.Popen(
        [sys.executable, "-m", "runner", f"hydra.run.dir={whole}", "seed=0", *LONGER],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    procs = [reference]
    try:
        procs.append(first := _start_sweep(sweep_dir))
        job_id = _job_id(run_dir, first)
        _checkpoint_after(run_dir, 0, first)
        subprocess.run(["scancel", "--signal=TERM", job_id], check=True)
        _, err = first.communicate(timeout=300)
        assert first.returncode == 1 and "did not complete" in err and "Traceback" not in err, err[-3000:]
        m = manifest(run_dir)
        found = latest_checkpoint(run_dir / "checkpoints")
        assert m["status"] == "interrupted" and m["outputs_partial"] is True
        assert found is not None and 0 < found[0] < 60, "the checkpoint was not kept"
        assert m["cluster"]["job_id"] == job_id

        procs.append(again := _start_sweep(sweep_dir, "hydra.launcher.skip_completed=true"))
        second_job = wait_for(
            lambda: _squeue_of(sweep_dir, exclude=job_id), timeout=120, every=0.5, proc=again
        )
        _checkpoint_after(run_dir, found[0], again)
        subprocess.run(["scontrol", "requeue", second_job], check=True)  # what a preemption with requeue does
        wait_for(lambda: _squeue(second_job) == "PENDING", timeout=120, every=0.2)
        subprocess.run(
            ["scontrol", "update", f"jobid={second_job}", "starttime=now"], check=True
        )  # skip requeue delay
        out, err = again.communicate(timeout=600)
        assert again.returncode == 0, err[-3000:]
        assert "it resumes in" in out + err
        reference.communicate(timeout=600)
        assert reference.returncode == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.communicate(timeout=120)
    resumed, ref = manifest(run_dir), manifest(whole)
    assert resumed["status"] == "completed" and resumed["run_id"] == m["run_id"]
    first_resume, second_resume = resumed["resumes"]
    assert first_resume["previous"]["status"] == "interrupted" and first_resume["from_step"] == found[0]
    assert second_resume["previous"]["status"] == "interrupted" and second_resume["from_step"] > found[0]
    assert resumed["cluster"]["job_id"] == second_job and resumed["cluster"]["restart_count"] == 1
    assert resumed["outputs"]["model.pt"] == ref["outputs"]["model.pt"]
    assert (run_dir / "fingerprints.jsonl").read_bytes() == (whole / "fingerprints.jsonl").read_bytes()


def _squeue_of(sweep_dir: Path, exclude: str) -> str | None:
    """The id of a running Slurm job of this sweep other than ``exclude``."""
    for script in (sweep_dir / ".slurm").glob("*_submission.sh"):
        jid = script.name.split("_")[0]
        if jid != exclude and _squeue(jid) == "RUNNING":
            return jid
    return None


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    lines = [x for x in proc.stderr.strip().splitlines() if x.startswith("runner: error:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return lines[0]


def test_an_unknown_partition_is_one_line_and_submits_nothing(tmp_path):
    _slurm_up()
    proc = run_runner(
        "-m",
        "hydra/launcher=slurm",
        "hydra.launcher.partition=nope",
        f"hydra.sweep.dir={tmp_path / 's'}",
        *ONE_CORE,
        "seed=0,1",
        timeout=120,
    )
    assert proc.returncode == 2
    assert "partition=nope: no such partition" in _one_error_line(proc) and "debug" in proc.stderr
    assert not (tmp_path / "s" / ".slurm").exists() and not (tmp_path / "s" / "0").exists()


def test_no_controller_is_one_line(tmp_path):
    conf = tmp_path / "slurm.conf"  # the same cluster, its controller's port one nobody listens on
    conf.write_text(
        Path("/etc/slurm/slurm.conf").read_text().replace("SlurmctldPort=6817", "SlurmctldPort=6999")
    )
    started = time.monotonic()
    proc = run_runner(
        "-m",
        "hydra/launcher=slurm",
        f"hydra.sweep.dir={tmp_path / 's'}",
        *ONE_CORE,
        "seed=0",
        env={"SLURM_CONF": str(conf)},
        timeout=120,
    )
    assert proc.returncode == 3
    assert "no Slurm cluster reachable" in _one_error_line(proc)
    assert time.monotonic() - started < 90 and not (tmp_path / "s" / ".slurm").exists()


def test_a_job_larger_than_any_node_is_refused_in_one_line(tmp_path):
    _slurm_up()
    proc = run_runner(
        "-m",
        "hydra/launcher=slurm",
        f"hydra.sweep.dir={tmp_path / 's'}",
        *FAST,
        "launch.processes=2",
        "seed=0",
        timeout=120,
    )
    assert proc.returncode == 2
    assert "sbatch refused" in _one_error_line(proc) and "cpus_per_task" in proc.stderr


# -- a run across nodes ---------------------------------------------------------------------------------
TWO_NODES = ["launch.nodes=2", "launch.processes=1"]  # one process on each node: world size 2


@pytest.fixture(scope="module")
def one_container_of_two(tmp_path_factory) -> dict:
    """The reference: world size 2 as two processes in one container on this machine."""
    run_dir = tmp_path_factory.mktemp("local2") / "run"
    proc = run_runner(f"hydra.run.dir={run_dir}", "seed=0", *LONGER, "launch.processes=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return manifest(run_dir)


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory) -> Path:
    _slurm_up()
    sweep_dir = tmp_path_factory.mktemp("nodes") / "sweep"
    proc = run_runner(
        "-m", "hydra/launcher=slurm", f"hydra.sweep.dir={sweep_dir}", "seed=0", *LONGER, *TWO_NODES
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return sweep_dir / "0"


def test_a_two_node_run_has_the_bits_of_one_container_with_two_processes(
    two_nodes, one_container_of_two, engine
):
    m, ref = manifest(two_nodes), one_container_of_two
    assert m["status"] == "completed" and m["launch"]["world_size"] == 2 and m["launch"]["nodes"] == 2
    assert m["outputs"]["model.pt"] == ref["outputs"]["model.pt"]
    assert m["fingerprints"]["sha256"] == ref["fingerprints"]["sha256"]
    # one Slurm job over both nodes; the nodes met on the host network, on the interface recorded
    c = m["cluster"]
    assert c["num_nodes"] == 2 and c["nodelist"] == "n[1-2]" and c["node"] == "n1"
    assert c["rendezvous"]["network"] == "host" and c["rendezvous"]["interface"] == "lo"
    assert c["rendezvous"]["address"] == "127.0.0.1"
    assert ref["cluster"] is None and ref["launch"]["nodes"] == 1
    # each node ran its own container, placed on its node's share of the allocation, and none is left
    for node, name in ((0, "n1"), (1, "n2")):
        first = (two_nodes / "logs" / f"node-{node}.log").read_text().splitlines()[0]
        assert first.startswith(
            f"runner: node {node} ({name}): container {m['launch']['container']}-node{node}"
        )
        assert "2000 MB" in first, first  # the allocation's memory (DefMemPerCPU × one core) limits it
        assert first.endswith(f"image {m['image']['id']}"), first  # by its id, never a tag
    assert engine.containers_labelled(RUN_ID_LABEL, m["run_id"]) == []


def test_a_two_node_run_replays_in_one_container_without_slurm(two_nodes, tmp_path):
    proc = _replay_without_slurm(two_nodes, tmp_path / "replay")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "a 2-node run, replayed in one container with the same world size (2)" in proc.stdout + proc.stderr
    r = manifest(tmp_path / "replay")
    assert r["launch"]["nodes"] == 1 and r["launch"]["world_size"] == 2 and r["cluster"] is None
    assert r["outputs"] == manifest(two_nodes)["outputs"]


def test_a_two_node_run_replays_across_two_nodes_inside_an_allocation(two_nodes, tmp_path, engine):
    """Back on the cluster: inside an allocation of two nodes (the runner on the first), the replay
    runs across both again."""
    proc = subprocess.run(
        ["salloc", "-N", "2", "--quiet", "srun", "-N", "1", "-n", "1"]
        + [sys.executable, "-m", "runner.replay", str(two_nodes), "--out", str(tmp_path / "replay")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = manifest(tmp_path / "replay")
    assert r["launch"]["nodes"] == 2 and r["cluster"]["num_nodes"] == 2
    assert r["cluster"]["rendezvous"]["interface"] == "lo"
    assert r["outputs"] == manifest(two_nodes)["outputs"]
    assert engine.containers_labelled(RUN_ID_LABEL, r["run_id"]) == []


def test_a_two_node_run_stopped_by_sigterm_resumes_to_the_same_bits(tmp_path, one_container_of_two, engine):
    """``scancel --signal=TERM`` reaches the runner and both node agents: every container stops, the
    run is recorded interrupted with its checkpoint, and the sweep run again resumes it across the
    two nodes to the bits of an uninterrupted run."""
    _slurm_up()
    sweep_dir = tmp_path / "sweep"
    run_dir = sweep_dir / "0"
    procs = [first := _start_sweep(sweep_dir, *TWO_NODES)]
    try:
        job_id = _job_id(run_dir, first)
        found = _checkpoint_after(run_dir, 0, first)
        subprocess.run(["scancel", "--signal=TERM", job_id], check=True)
        _, err = first.communicate(timeout=300)
        assert first.returncode == 1 and "Traceback" not in err, err[-3000:]
        m = manifest(run_dir)
        assert m["status"] == "interrupted" and engine.containers_labelled(RUN_ID_LABEL, m["run_id"]) == []
        kept = latest_checkpoint(run_dir / "checkpoints")
        assert kept is not None and found <= kept[0] < 60

        procs.append(again := _start_sweep(sweep_dir, *TWO_NODES, "hydra.launcher.skip_completed=true"))
        out, err = again.communicate(timeout=600)
        assert again.returncode == 0, err[-3000:]
        assert "it resumes in" in out + err
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.communicate(timeout=120)
    resumed = manifest(run_dir)
    assert resumed["status"] == "completed" and resumed["resumes"][0]["from_step"] == kept[0]
    assert resumed["cluster"]["rendezvous"]["interface"] == "lo"
    assert resumed["outputs"]["model.pt"] == one_container_of_two["outputs"]["model.pt"]
    assert resumed["fingerprints"]["sha256"] == one_container_of_two["fingerprints"]["sha256"]
    assert engine.containers_labelled(RUN_ID_LABEL, resumed["run_id"]) == []


def test_a_multi_node_run_outside_an_allocation_is_one_line(tmp_path):
    no_slurm = {k: v for k, v in os.environ.items() if not k.startswith("SLURM")}
    proc = subprocess.run(
        [sys.executable, "-m", "runner", f"hydra.run.dir={tmp_path / 'r'}", *FAST, *TWO_NODES],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=no_slurm,
    )
    assert proc.returncode == 2
    assert "launch.nodes=2 runs one container per node of a Slurm allocation" in _one_error_line(proc)
    assert not (tmp_path / "r" / "manifest.json").exists()


# -- as an unprivileged user, under Charliecloud ---------------------------------------------------------
# ``runner-ci`` (made by `make charliecloud`) submits from its own directory, with a login's environment
# and nothing of root's; Slurm runs the jobs as that user; ch-run runs each container unprivileged, from
# the CPU image the user's Charliecloud cache holds by image id (unpacked once from Docker's image file).
CHARLIECLOUD = ["engine=charliecloud"]


@pytest.fixture(scope="module")
def user_dir(charliecloud_image) -> Iterator[Path]:
    """A directory the unprivileged user owns, for its sweeps."""
    path = ci_user.scratch("slurm")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _as_user_on_slurm(sweep_dir: Path, *args: str) -> subprocess.CompletedProcess:
    _slurm_up()
    proc = ci_user.python_as("-m", "hydra/launcher=slurm", f"hydra.sweep.dir={sweep_dir}", *args)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "Traceback" not in proc.stderr
    return proc


def _ran_as_the_user(m: dict, run_dir: Path) -> None:
    """Slurm ran the job as the user, ch-run ran its container unprivileged as the user, and
    everything in the run dir is the user's."""
    user = ci_user.account()
    assert m["cluster"]["user"] == ci_user.CI_USER and m["launch"]["user"] == f"{user.pw_uid}:{user.pw_gid}"
    assert m["engine"]["name"] == "charliecloud" and m["engine"]["rootless"] is True
    assert {p.stat().st_uid for p in [run_dir, *run_dir.rglob("*")]} == {user.pw_uid}
    cache = Path(user.pw_dir) / ".cache/runner/charliecloud"
    assert CharliecloudEngine(cache_dir=str(cache)).containers_labelled(RUN_ID_LABEL, m["run_id"]) == []


def test_an_unprivileged_users_slurm_sweep_under_charliecloud_has_dockers_bits(
    user_dir, local_seeds, charliecloud_image
):
    """Seeds 0 and 1, submitted by the user: each job's weights and fingerprints are those Docker
    gave the same seed on this machine (as root), from the very image (its id)."""
    sweep_dir = user_dir / "seeds"
    _as_user_on_slurm(sweep_dir, *CHARLIECLOUD, *ONE_CORE, "seed=0,1")
    ms = {
        m["determinism"]["seed"]: (m, p.parent)
        for p in sweep_dir.glob("*/manifest.json")
        if (m := manifest(p.parent))
    }
    assert sorted(ms) == [0, 1]
    for seed, (m, run_dir) in ms.items():
        ref = local_seeds[seed]
        assert m["status"] == "completed" and ref["engine"]["name"] == "docker"
        assert m["outputs"]["model.pt"] == ref["outputs"]["model.pt"], f"seed {seed}"
        assert m["fingerprints"]["sha256"] == ref["fingerprints"]["sha256"], f"seed {seed}"
        assert m["image"]["id"] == ref["image"]["id"] == charliecloud_image[1]
        assert m["config"]["launch"]["image_id"] == m["image"]["id"]  # the sweep's image, by its id
        assert m["cluster"]["node"] in ("n1", "n2") and m["cluster"]["array_job_id"]
        _ran_as_the_user(m, run_dir)


@pytest.fixture(scope="module")
def user_two_nodes(user_dir) -> Path:
    """One run over both nodes, submitted by the user under Charliecloud."""
    sweep_dir = user_dir / "nodes"
    _as_user_on_slurm(sweep_dir, *CHARLIECLOUD, "seed=0", *LONGER, *TWO_NODES)
    return sweep_dir / "0"


def test_an_unprivileged_users_two_node_run_under_charliecloud_has_dockers_bits(
    user_two_nodes, one_container_of_two
):
    """Each node's agent ran its container by the image's id (never a tag), and the bits are those
    of one Docker container with two processes."""
    run_dir = user_two_nodes
    m, ref = manifest(run_dir), one_container_of_two
    assert m["status"] == "completed" and m["launch"]["nodes"] == 2 and m["launch"]["world_size"] == 2
    assert m["outputs"]["model.pt"] == ref["outputs"]["model.pt"]
    assert m["fingerprints"]["sha256"] == ref["fingerprints"]["sha256"]
    assert m["cluster"]["num_nodes"] == 2 and m["cluster"]["rendezvous"]["network"] == "host"
    assert json.loads((run_dir / "nodes.json").read_text())["request"]["image"] == m["image"]["id"]
    for node, name in ((0, "n1"), (1, "n2")):
        first = (run_dir / "logs" / f"node-{node}.log").read_text().splitlines()[0]
        assert first.startswith(
            f"runner: node {node} ({name}): container {m['launch']['container']}-node{node}"
        )
        assert first.endswith(f"image {m['image']['id']}"), first
    _ran_as_the_user(m, run_dir)


def test_an_unprivileged_users_two_node_run_replays_across_two_nodes_under_charliecloud(
    user_two_nodes, user_dir
):
    """Back on the cluster inside an allocation of two nodes, the user replays the two-node run:
    each node agent runs on the record's engine (chosen by name, as the replay's own), not Docker's."""
    run_dir, out = user_two_nodes, user_dir / "replay"
    proc = ci_user.run_as(
        "salloc", "-N", "2", "--quiet", "srun", "-N", "1", "-n", "1",
        sys.executable, "-m", "runner.replay", str(run_dir), "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    r = manifest(out)
    assert (
        r["launch"]["nodes"] == 2 and r["cluster"]["num_nodes"] == 2 and r["engine"]["name"] == "charliecloud"
    )
    assert r["outputs"] == manifest(run_dir)["outputs"]
    assert (out / "logs" / "node-1.log").read_text().splitlines()[0].endswith(f"image {r['image']['id']}")
    _ran_as_the_user(r, out)


def test_an_unprivileged_users_slurm_sweep_under_rootless_podman_has_dockers_bits(
    user_dir, local_seeds, engine
):
    """The same sweep under rootless Podman: each job's runner starts the user's own Podman service
    on its node (and stops it), and runs the sweep's image by id."""
    _, image_id = ci_user.podman_image(engine)
    sweep_dir = user_dir / "podman"
    _as_user_on_slurm(sweep_dir, *ONE_CORE, "engine=podman", "seed=0,1")
    for p in sorted(sweep_dir.glob("*/manifest.json")):
        m = manifest(p.parent)
        ref = local_seeds[m["determinism"]["seed"]]
        assert m["status"] == "completed" and m["engine"]["name"] == "podman" and m["engine"]["rootless"]
        assert m["outputs"]["model.pt"] == ref["outputs"]["model.pt"]
        assert m["fingerprints"]["sha256"] == ref["fingerprints"]["sha256"]
        assert m["image"]["id"] == m["config"]["launch"]["image_id"] == image_id
        assert m["cluster"]["user"] == ci_user.CI_USER
    assert len(list(sweep_dir.glob("*/manifest.json"))) == 2
