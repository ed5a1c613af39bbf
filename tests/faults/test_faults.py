"""No run lost, however it dies: real signals, a real engine, a real full file system.

Each test kills or starves a real run and checks what a user relies on afterwards: no container of
the run is left, its record reads (``manifest.json`` whole, the status saying what happened), no
completed checkpoint or output is lost, and where a checkpoint existed, ``+resume=RUN_DIR`` ends
bit-identical (weights and every fingerprint) to the same run never interrupted.

Runs are short (one process, 1024 samples, 24 steps, a checkpoint every 5 steps); a full disk is a
small tmpfs mounted in the run dir (root, as CI runs). The engine going away mid-run stops a
dockerd of the module's own (:class:`tests.private_engine.PrivateDockerd`), never the machine's.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runner.core import layout
from runner.core.engine_types import ContainerRequest
from runner.core.errors import EXIT_ENGINE_LOST, EngineLost, RunnerError
from runner.core.layout import latest_checkpoint
from runner.host import records, rundir
from runner.host.docker_engine import DockerEngine
from runner.host.hashing import sha256_file
from tests.conftest import ROOT, manifest, run_runner
from tests.fault_table import FaultRow
from tests.live_runs import (
    PROBE,
    containers_of,
    finish,
    last_step,
    one_error_line,
    probe_args,
    start,
    wait_for,
)
from tests.private_engine import PrivateDockerd, running

pytestmark = pytest.mark.docker

RUN = [
    "model.train_samples=1024",
    "trainer.max_steps=24",
    "trainer.max_epochs=-1",
    "fingerprints.every_k_steps=4",
    "launch.checkpoint_every_n_steps=5",
    "model.dropout=0.25",
    "launch.processes=1",
]
DDP = [*RUN[:-1], "launch.processes=2"]


def _reference(tmp_path_factory, overrides: list[str]) -> Path:
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    p = run_runner(f"hydra.run.dir={run_dir}", *overrides)
    assert p.returncode == 0, p.stderr[-3000:]
    return run_dir


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The same run, never interrupted: what every resume must end as, bit for bit."""
    return _reference(tmp_path_factory, RUN)


@pytest.fixture(scope="module")
def ddp_reference(tmp_path_factory) -> Path:
    return _reference(tmp_path_factory, DDP)


@contextlib.contextmanager
def tmpfs(where: Path, size: str, inodes: int | None = None):
    """A small file system of its own at ``where``: a disk that fills up (in bytes, or in files:
    ``inodes``, the most it holds, itself included)."""
    where.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (f",nr_inodes={inodes}" if inodes else "")
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _grow(where: Path, size: str = "64m") -> None:
    """Space freed: the file system grows (in bytes and in files)."""
    subprocess.run(["mount", "-o", f"remount,size={size},nr_inodes=100000", str(where)], check=True)


def _fill(where: Path) -> Path:
    """Take every free byte of ``where``'s file system; returns the ballast file."""
    ballast = where / ".ballast"
    fd = os.open(ballast, os.O_CREAT | os.O_WRONLY, 0o600)
    try:
        for size in (1 << 20, 4096, 1):
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * size):
                    pass
    finally:
        os.close(fd)
    return ballast


def _whole(run_dir: Path, engine) -> dict:
    """Nothing of the run left running, and a whole record that reads: returns it."""
    assert containers_of(engine, run_dir) == [], "a container of the run is still there"
    assert not list(run_dir.glob(".manifest.json.*")), "a temporary manifest was left behind"
    assert not list((run_dir / layout.CHECKPOINT_DIR).glob(".*.part")), "a half-written checkpoint"
    records.read_manifest(run_dir)  # the schema and the digest accept it
    return manifest(run_dir)


def _running(engine, run_dir: Path) -> list:
    """The run's containers still running (one being removed has stopped)."""
    running = []
    for c in containers_of(engine, run_dir):
        with contextlib.suppress(Exception):  # removed meanwhile
            c.reload()
            if c.status == "running":
                running.append(c)
    return running


def _checkpoints(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / layout.CHECKPOINT_DIR).glob("step-*.ckpt"))


def _resume_identical(
    run_dir: Path,
    reference: Path,
    engine,
    row: FaultRow,
    checkpoint: bool | None = True,
    env: dict | None = None,
) -> dict:
    """``+resume`` from the newest checkpoint (or from the start, where none was written) ends as
    the uninterrupted run did, bit for bit (told to the fault's ``row``). ``checkpoint``: whether
    one must (True) or must not (False) be there; None where that depends on how far training got
    before the run stopped. ``env``: the resume's variables beside the test's (``DOCKER_HOST``: on
    another engine)."""
    kept = latest_checkpoint(run_dir / layout.CHECKPOINT_DIR)
    assert checkpoint is None or (kept is not None) == checkpoint, kept
    before = set(_checkpoints(run_dir))  # a kill between a save and the removal after it leaves one more
    p = run_runner(f"+resume={run_dir}", env=env)
    ref = manifest(reference)
    with contextlib.suppress(OSError, ValueError):  # told before it is asserted, so that the table says so
        row.resumed(
            kept[0] if kept else 0,
            p.returncode == 0
            and manifest(run_dir)["outputs"].get("model.pt") == ref["outputs"]["model.pt"]
            and (run_dir / "fingerprints.jsonl").read_bytes()
            == (reference / "fingerprints.jsonl").read_bytes(),
        )
    assert p.returncode == 0, p.stderr[-3000:]
    m = _whole(run_dir, engine)
    assert m["status"] == "completed" and m["resumes"][-1]["from_step"] == (kept[0] if kept else 0)
    assert m["outputs"]["model.pt"]["sha256"] == ref["outputs"]["model.pt"]["sha256"]
    assert (run_dir / "fingerprints.jsonl").read_bytes() == (reference / "fingerprints.jsonl").read_bytes()
    # launch.keep_checkpoints=2: of those the resume wrote, the newest two are kept; the one it started
    # from stays (Lightning never deletes that one), and so do those the attempt before left
    started = {kept[1].name} if kept else set()
    written = set(_checkpoints(run_dir)) - before
    assert written <= {"step-00000015.ckpt", "step-00000020.ckpt", *started}, written
    assert "step-00000020.ckpt" in _checkpoints(run_dir)
    return m


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_a_signal_to_the_runner_interrupts_and_resumes(tmp_path, engine, reference, sig, fault_row):
    row = fault_row(f"{sig.name} to the runner")
    run_dir = tmp_path / "run"
    row.watch(run_dir)
    proc = start(run_dir, *RUN)
    wait_for(lambda: last_step(run_dir) >= 8, proc=proc)
    proc.send_signal(sig)
    code, _, err = finish(proc)
    row.observe(run_dir, engine, "interrupted", code=code, stderr=err)
    assert code == 130 and "interrupted" in one_error_line(err)
    m = _whole(run_dir, engine)
    assert m["status"] == "interrupted" and not (run_dir / layout.CLAIM).exists()
    assert _checkpoints(run_dir), "its checkpoints are kept"  # which: how far it got before the signal
    assert row.files_lost == []
    _resume_identical(run_dir, reference, engine, row)


def test_sigkill_of_the_runner_leaves_no_container_and_an_abandoned_run(
    tmp_path, engine, reference, fault_row
):
    row = fault_row("SIGKILL of the runner")
    run_dir = tmp_path / "run"
    row.watch(run_dir)
    proc = start(run_dir, *RUN)
    wait_for(lambda: last_step(run_dir) >= 8, proc=proc)
    assert manifest(run_dir)["status"] == "running"  # the provisional record, from the start
    proc.kill()
    proc.communicate()
    killed = time.monotonic()
    wait_for(lambda: not _running(engine, run_dir), timeout=10, every=0.2)
    stopped_after = time.monotonic() - killed
    assert stopped_after < 10, f"the container ran on {stopped_after:.1f} s after its runner died"
    wait_for(lambda: containers_of(engine, run_dir) == [], timeout=60, every=0.5)  # and is removed
    row.observe(run_dir, engine, "abandoned")
    row.note = f"its container stopped {stopped_after:.1f} s after the runner died"
    m = _whole(run_dir, engine)
    assert row.files_lost == []
    assert m["config"]["seed"] == 0 and m["image"]["id"] and m["code"]["snapshot_sha256"]
    assert rundir.run_status(run_dir, m["status"]) == "abandoned"
    kept = _checkpoints(run_dir)
    again = run_runner(f"hydra.run.dir={run_dir}", "trainer.max_steps=10")  # never taken over
    assert again.returncode == 2 and f"+resume={run_dir}" in one_error_line(again.stderr)
    assert _checkpoints(run_dir) == kept and manifest(run_dir)["status"] == "running"
    resumed = _resume_identical(run_dir, reference, engine, row)
    assert resumed["resumes"][-1]["previous"]["status"] == "abandoned"


def test_two_runners_on_one_dir_the_second_is_refused_and_takes_nothing(
    tmp_path, engine, reference, fault_row
):
    """A second runner aimed at the dir of a run in progress is refused in one line (the dir is in
    use) and changes nothing: the first's record stays as it was, and the first ends as if alone,
    bit for bit. The first's container is held still (paused) while the second tries, so that the
    second surely meets it mid-run, however fast training goes."""
    row = fault_row("two runners on one dir", resumes=False)
    run_dir = tmp_path / "run"
    row.watch(run_dir)
    proc = start(run_dir, *RUN)
    wait_for(lambda: last_step(run_dir) >= 8, proc=proc)
    (first,) = containers_of(engine, run_dir)
    first.pause()
    try:
        held = (run_dir / layout.MANIFEST).read_bytes()
        second = run_runner(f"hydra.run.dir={run_dir}", *RUN)
        assert (run_dir / layout.MANIFEST).read_bytes() == held, "the second runner touched the record"
    finally:
        first.unpause()
    code, _, err = finish(proc)
    row.observe(run_dir, engine, "completed", code=second.returncode, stderr=second.stderr)
    ref, prints = manifest(reference), (reference / "fingerprints.jsonl").read_bytes()
    alone = (
        manifest(run_dir)["outputs"] == ref["outputs"]
        and (run_dir / "fingerprints.jsonl").read_bytes() == prints
    )
    row.note = "the exit is the second's; the first's record untouched, its end " + (
        "bit-identical to a run alone" if alone else "**not** identical to a run alone"
    )
    assert second.returncode == 2 and "in use by another run" in one_error_line(second.stderr)
    assert json.loads(held)["status"] == "running"  # the provisional record, from the start
    assert code == 0, err[-3000:]
    m = _whole(run_dir, engine)
    assert m["status"] == "completed" and m["outputs"]["model.pt"] == ref["outputs"]["model.pt"]
    assert alone and row.files_lost == [] and row.reached == 24


FASHION = Path("/usr/share/datasets/fashion-mnist")


def test_sigkill_before_the_image_is_chosen_resumes_from_the_recorded_code(
    tmp_path, engine, reference, fault_row
):
    """Killed after its first record (config and code) and before its second (image, engine): here
    while it downloads its data from a mirror that never answers. ``+resume`` chooses the image
    from the recorded code, as the run would have, and ends as the uninterrupted run did."""
    row = fault_row("SIGKILL of the runner before its image is chosen")
    data = tmp_path / "data"
    files = sorted(p.name for p in FASHION.glob("*.gz"))
    sums = ",".join(f"{name}:{sha256_file(FASHION / name)}" for name in files)
    with socket.socket() as mirror:  # takes the request, never answers
        mirror.bind(("127.0.0.1", 0))
        mirror.listen()
        mirror.settimeout(120)
        url = f"http://127.0.0.1:{mirror.getsockname()[1]}/"
        run_dir = tmp_path / "run"
        proc = start(
            run_dir,
            *RUN,
            f"dataset.root={data}",
            f"dataset.download={{mirrors:[{url}],sha256:{{{sums}}},timeout_s:300}}",
        )
        asked, _ = mirror.accept()  # the runner is in its data step, its first record written
        with asked:
            m = manifest(run_dir)
            assert m["status"] == "running" and m["code"]["snapshot_sha256"] and m["image"] is None, m
            proc.kill()
            proc.communicate()
    row.observe(run_dir, engine, "abandoned")
    m = _whole(run_dir, engine)
    assert rundir.run_status(run_dir, m["status"]) == "abandoned" and m["image"] is None
    for name in files:  # the data, had another way
        (data / name).write_bytes((FASHION / name).read_bytes())
    resumed = _resume_identical(run_dir, reference, engine, row, checkpoint=False)
    assert resumed["resumes"][-1]["previous"]["status"] == "abandoned"
    assert resumed["image"]["id"] == manifest(reference)["image"]["id"]


def test_a_run_stopped_before_its_code_snapshot_is_refused_with_the_way_out(tmp_path, engine, fault_row):
    """The disk fills up while the code snapshot is taken: the record (failed, no space) holds no
    code, so nothing of the run ran. ``+resume`` and a new run in the dir both refuse it in one line
    saying so, and what to do instead, and take nothing."""
    row = fault_row("ENOSPC in the code snapshot (before anything ran; no resume: nothing to resume)", False)
    run_dir = tmp_path / "run"
    with tmpfs(run_dir, "1600k"):  # the space kept for the record fits, the snapshot does not
        p = run_runner(f"hydra.run.dir={run_dir}", *RUN)
        row.observe(run_dir, engine, "failed", code=p.returncode, stderr=p.stderr, reason="no space")
        assert p.returncode == 1
        line = one_error_line(p.stderr)
        assert f"no space left on device writing {run_dir}" in line, line
        assert "run it again in another dir (nothing of it ran)" in line and "+resume" not in line, line
        m = _whole(run_dir, engine)
        assert m["status"] == "failed" and m["code"] is None and m["image"] is None, m
        held = (run_dir / layout.MANIFEST).read_bytes()
        for p in (run_runner(f"+resume={run_dir}"), run_runner(f"hydra.run.dir={run_dir}", *RUN)):
            assert p.returncode == 2
            line = one_error_line(p.stderr)
            assert "stopped before its code snapshot was taken: nothing of it ran" in line, line
            assert "remove it, or run in another dir" in line and "+resume" not in line, line
        assert (run_dir / layout.MANIFEST).read_bytes() == held  # taken by neither


def test_sigkill_of_one_rank_fails_the_run_and_resumes(tmp_path, engine, ddp_reference, fault_row):
    row = fault_row("SIGKILL of one rank (of 2)")
    run_dir = tmp_path / "run"
    row.watch(run_dir)
    proc = start(run_dir, *DDP)
    wait_for(lambda: last_step(run_dir) >= 8, proc=proc)
    (container,) = containers_of(engine, run_dir)
    top = container.top(ps_args="-o pid,ppid,args")
    rows = [r for r in top["Processes"] if "runner.worker" in r[-1]]
    worker = min(rows, key=lambda r: int(r[0]))  # PID 1 of the container: its children are the ranks
    ranks = [int(r[0]) for r in rows if r[1] == worker[0]]
    assert len(ranks) == 2, top
    os.kill(ranks[1], signal.SIGKILL)
    code, _, err = finish(proc)
    row.observe(run_dir, engine, "failed", code=code, stderr=err, reason="SIGKILL")
    assert code == 1 and "run failed" in one_error_line(err, training_traceback=True)
    m = _whole(run_dir, engine)
    assert m["status"] == "failed" and "SIGKILL" in m["error"], m["error"]
    assert row.files_lost == []
    _resume_identical(run_dir, ddp_reference, engine, row)


def test_a_container_out_of_memory_is_reported_as_such(tmp_path, engine, fault_row):
    row = fault_row("a container OOM (the probe script, no training: nothing to resume)", resumes=False)
    run_dir = tmp_path / "run"
    p = run_runner(f"hydra.run.dir={run_dir}", *PROBE, "launch.mem_limit=96m", probe_args("hog", "1024"))
    row.observe(run_dir, engine, "failed", code=p.returncode, stderr=p.stderr, reason="out of memory")
    assert p.returncode == 1 and "out of memory" in one_error_line(p.stderr)
    m = _whole(run_dir, engine)
    assert m["status"] == "failed" and "out of memory" in m["error"], m["error"]


@pytest.fixture(scope="module")
def private_engine(reference):
    """A dockerd of this module's own, holding the run's image and its base (copied from the
    machine's engine, which the reference run found or built them on): one a test may stop."""
    image = manifest(reference)["image"]
    dockerd = PrivateDockerd()
    try:
        dockerd.start()
        dockerd.load_from_shared(image["tag"], image["base_ref"])
        yield dockerd
    finally:
        dockerd.close()


def test_the_engine_going_away_mid_run_is_one_line_a_record_and_a_resume(
    tmp_path, reference, private_engine, fault_row
):
    """dockerd stopped mid-run (SIGTERM, as a restart stops it; a private one): the run ends in one
    line naming the engine and the step, exit 5, its record failed (engine lost), its checkpoints
    kept; once the engine is back no container of the run is there, and the resume is bit-identical."""
    row = fault_row("an engine restart (dockerd stopped mid-run)")
    dockerd, env = private_engine, {"DOCKER_HOST": private_engine.url}
    run_dir = tmp_path / "run"
    row.watch(run_dir)
    proc = start(run_dir, *RUN, env=env)
    wait_for(lambda: last_step(run_dir) >= 8, proc=proc)
    dockerd.stop()  # it closes its socket, then stops its containers (no live-restore), then exits
    code, _, err = finish(proc)
    line = one_error_line(err)
    went = f"engine lost: the container engine (docker at {dockerd.url}) went away at step "
    assert code == EXIT_ENGINE_LOST == 5 and went in line, line
    assert int(line.split(went)[1].split(":")[0]) >= 8, line
    kept = _checkpoints(run_dir)
    assert kept, "its checkpoints are kept"  # which: how far it got before the engine stopped
    dockerd.start()  # the engine is back
    engine = DockerEngine(base_url=dockerd.url)
    try:
        row.observe(run_dir, engine, "failed", code=code, stderr=err, reason="engine lost")
        m = _whole(run_dir, engine)  # no container of the run, running or not; the record reads
        assert m["status"] == "failed" and m["exit_code"] == EXIT_ENGINE_LOST and m["error"] in line
        assert m["error"].endswith(f"+resume={run_dir} continues it from checkpoints/{kept[-1]}")
        assert not (run_dir / layout.CLAIM).exists() and row.files_lost == []
        resumed = _resume_identical(run_dir, reference, engine, row, env=env)
        assert resumed["resumes"][-1]["previous"]["status"] == "failed"
    finally:
        engine.close()


@pytest.mark.slurm
def test_the_engine_going_away_under_a_run_across_nodes_is_engine_lost(tmp_path, private_engine, fault_row):
    """The same across two Slurm nodes (each node agent's engine the private dockerd, through
    DOCKER_HOST, which srun hands on): the agents tell how their containers ended, and the run ends
    in the one engine-lost line, exit 5, its record failed (engine lost), its checkpoints kept."""
    from tests.faults.test_node_faults import NODES, across_two_nodes

    row = fault_row("node: the engine going away under a run across nodes", resumes=False)
    dockerd, env = private_engine, {"DOCKER_HOST": private_engine.url}
    run_dir = tmp_path / "run"
    row.watch(run_dir)
    with across_two_nodes(run_dir, *RUN[:-1], *NODES, env=env) as proc:
        wait_for(lambda: last_step(run_dir) >= 8, proc=proc)
        dockerd.stop()
        code, _, err = finish(proc)
    # the rank whose peer's container went first prints its traceback (training's log, echoed), as
    # when one rank is killed
    line = one_error_line(err, training_traceback=True)
    assert code == EXIT_ENGINE_LOST and "engine lost: the container engine (docker at " in line, line
    assert " of node " in line and "+resume=" in line, line
    assert _checkpoints(run_dir), "its checkpoints are kept"
    dockerd.start()
    engine = DockerEngine(base_url=dockerd.url)
    try:
        row.observe(run_dir, engine, "failed", code=code, stderr=err, reason="engine lost")
        m = _whole(run_dir, engine)
        assert m["status"] == "failed" and m["exit_code"] == EXIT_ENGINE_LOST and m["error"] in line
    finally:
        engine.close()


def test_the_engine_killed_mid_run_leaves_no_container_running(
    tmp_path, reference, private_engine, fault_row
):
    """dockerd killed outright mid-run (SIGKILL, a crash; a private one): its containers would run
    on unattended (containerd's shims keep them, and the lifeline's stdin stays open), so the runner
    stops the container's main process itself before it writes the record: nothing writes into the
    run dir after it. Once the engine is back nothing of the run is there, and the resume is identical."""
    row = fault_row("an engine crash (dockerd killed mid-run)")
    dockerd, env = private_engine, {"DOCKER_HOST": private_engine.url}
    run_dir = tmp_path / "run"
    row.watch(run_dir)
    proc = start(run_dir, *RUN, env=env)
    wait_for(lambda: last_step(run_dir) >= 8, proc=proc)
    engine = DockerEngine(base_url=dockerd.url)
    (container,) = containers_of(engine, run_dir)
    pid = container.attrs["State"]["Pid"]
    engine.close()
    dockerd.kill()
    code, _, err = finish(proc)
    assert code == EXIT_ENGINE_LOST and "engine lost:" in one_error_line(err)
    assert not running(pid), "the container's training ran on after its runner ended"
    kept = _checkpoints(run_dir)
    assert kept
    dockerd.start()
    engine = DockerEngine(base_url=dockerd.url)
    try:
        row.observe(run_dir, engine, "failed", code=code, stderr=err, reason="engine lost")
        m = _whole(run_dir, engine)
        assert m["status"] == "failed" and m["error"].startswith("engine lost: ")
        assert _checkpoints(run_dir) == kept  # nothing wrote into the run dir after the record
        assert row.files_lost == []
        _resume_identical(run_dir, reference, engine, row, env=env)
    finally:
        engine.close()


def test_an_engine_gone_before_the_container_runs_is_engine_lost_too(
    tmp_path, reference, private_engine, fault_row
):
    """The engine goes away between the run's image and its container, or mid-build: the same
    one line as mid-run (a run records it and resumes from the start), not requests' traceback."""
    row = fault_row("the engine gone before the container starts, or mid-build (asked directly)", False)
    engine = DockerEngine(base_url=private_engine.url)
    engine.describe()  # connected, as a run is by the time its container starts
    base = manifest(reference)["image"]["base_ref"]
    name = f"runner-test-gone-{tmp_path.name}"
    request = ContainerRequest(base, name, ["true"], {}, "1000:1000", [], lifeline=True)
    (tmp_path / "Dockerfile").write_text(f"FROM {base}\nRUN true\n")
    private_engine.stop()
    try:
        gone = f"the container engine (docker at {private_engine.url}) went away: it stopped answering ("
        with pytest.raises(EngineLost) as started:
            engine.start(request)
        with pytest.raises(EngineLost) as built:
            engine.build("runner-test-gone:x", tmp_path / "Dockerfile", {}, {}, {}, on_line=print)
        told = [
            x.value.exit_code == EXIT_ENGINE_LOST
            and x.value.message.startswith(gone)
            and "\n" not in x.value.message
            for x in (started, built)
        ]
        row.observed(
            {"start: engine lost": told[0], "build: engine lost": told[1]},
            "the container's start and the build each raise engine lost (exit 5), one line each",
        )
        for lost in (started.value, built.value):
            assert lost.exit_code == EXIT_ENGINE_LOST and lost.message.startswith(gone), lost.message
    finally:
        engine.close()
        private_engine.start()


def _no_space(run_dir: Path, stderr: str, engine, where: str) -> dict:
    line = one_error_line(stderr)
    assert "no space left on device writing" in line and where in line and "bytes free" in line, line
    m = _whole(run_dir, engine)
    assert m["status"] == "failed" and "no space" in m["error"] and f"+resume={run_dir}" in m["error"]
    return m


def test_a_full_disk_under_the_checkpoints(tmp_path, engine, reference, fault_row):
    row = fault_row("ENOSPC in the checkpoints")
    run_dir = tmp_path / "run"
    with tmpfs(run_dir / layout.CHECKPOINT_DIR, "1200k") as ckpts:  # room for one checkpoint, not two
        row.watch(run_dir)
        p = run_runner(f"hydra.run.dir={run_dir}", *RUN)
        row.observe(run_dir, engine, "failed", code=p.returncode, stderr=p.stderr, reason="no space")
        assert p.returncode == 1
        _no_space(run_dir, p.stderr, engine, f"{ckpts}/step-00000010.ckpt")
        assert _checkpoints(run_dir) == ["step-00000005.ckpt"]  # the last complete one, kept
        assert row.files_lost == []
        _grow(ckpts)
        _resume_identical(run_dir, reference, engine, row)


def test_a_full_disk_under_the_outputs(tmp_path, engine, reference, fault_row):
    row = fault_row("ENOSPC in the outputs")
    run_dir = tmp_path / "run"
    with tmpfs(run_dir / layout.OUTPUTS_DIR, "64k") as outputs:  # the weights do not fit
        row.watch(run_dir)
        p = run_runner(f"hydra.run.dir={run_dir}", *RUN)
        row.observe(run_dir, engine, "failed", code=p.returncode, stderr=p.stderr, reason="no space")
        assert p.returncode == 1
        _no_space(run_dir, p.stderr, engine, str(outputs))
        assert _checkpoints(run_dir) == ["step-00000015.ckpt", "step-00000020.ckpt"]
        assert row.files_lost == []
        _grow(outputs)
        _resume_identical(run_dir, reference, engine, row)


def test_a_full_disk_under_the_logs(tmp_path, engine, reference, fault_row):
    row = fault_row("ENOSPC in the logs")
    run_dir = tmp_path / "run"
    with tmpfs(run_dir / layout.LOGS_DIR, "64k") as logs:  # full before the first line (lines after
        ballast = _fill(logs)  # a fill mid-run may still fit the log's last page)
        row.watch(run_dir)
        p = run_runner(f"hydra.run.dir={run_dir}", *RUN)
        row.observe(run_dir, engine, "failed", code=p.returncode, stderr=p.stderr, reason="no space")
        assert p.returncode == 1
        _no_space(run_dir, p.stderr, engine, f"{logs}/{layout.TRAIN_LOG}")
        assert row.files_lost == []
        ballast.unlink()
        # the executor stops training once the runner's log writer met ENOSPC: the first
        # checkpoint may or may not have been written by then
        _resume_identical(run_dir, reference, engine, row, checkpoint=None)


def test_a_full_disk_under_the_manifest_itself(tmp_path, engine, reference, fault_row):
    """The manifest's own write meets ENOSPC: the run dir's file system (a tmpfs) has no file left
    for the run's first record once the run took those it writes before (the dir, Hydra's .hydra/
    and its 3 files, app.log, the claim, the reserve's 2 files, code.tar: 10). The run stops in one
    line naming the manifest's temporary file; the files kept from the start take the final record
    (manifest and provenance); once files are freed the resume (from the start: nothing trained)
    is bit-identical."""
    row = fault_row("ENOSPC in the manifest (its own first write: the run dir out of inodes)")
    run_dir = tmp_path / "run"
    with tmpfs(run_dir, "64m", inodes=10):
        row.watch(run_dir)
        p = run_runner(f"hydra.run.dir={run_dir}", *RUN)
        row.observe(run_dir, engine, "failed", code=p.returncode, stderr=p.stderr, reason="no space")
        assert p.returncode == 1
        _no_space(run_dir, p.stderr, engine, f"{run_dir}/.{layout.MANIFEST}.")
        assert (run_dir / layout.PROVENANCE).is_file() and (run_dir / layout.CODE_ARCHIVE).is_file()
        assert row.files_lost == []
        _grow(run_dir)
        _resume_identical(run_dir, reference, engine, row, checkpoint=False)


def test_a_full_disk_under_the_whole_run_dir_still_takes_the_record(tmp_path, engine, reference, fault_row):
    """The disk fills up mid-run under everything (fingerprints, logs, checkpoints, the manifest):
    the space kept from the start takes the final record."""
    row = fault_row("ENOSPC everywhere (the whole run dir full mid-run; the record takes the reserve)")
    run_dir = tmp_path / "run"
    with tmpfs(run_dir, "16m"):
        row.watch(run_dir)
        proc = start(run_dir, *RUN)
        wait_for(lambda: last_step(run_dir) >= 8, proc=proc)
        ballast = _fill(run_dir)
        code, _, err = finish(proc)
        row.observe(run_dir, engine, "failed", code=code, stderr=err, reason="no space")
        assert code == 1
        _no_space(run_dir, err, engine, str(run_dir))
        assert not (run_dir / layout.RESERVE).exists()
        assert _checkpoints(run_dir), "the last whole checkpoint is kept"  # which: how far it got
        assert row.files_lost == []
        ballast.unlink()
        _resume_identical(run_dir, reference, engine, row)


_WRITER = """
import sys
from pathlib import Path
from runner.host import records
run_dir = Path(sys.argv[1])
m = records.read_manifest(run_dir)
print("writing", flush=True)
i = 0
while True:
    i += 1
    records.write_manifest(run_dir, m.model_copy(update={"exit_code": i % 7, "log_tail": ["x" * 4000] * 50}))
"""


def test_a_kill_during_the_manifest_write_leaves_the_old_record_or_the_new(tmp_path, reference, fault_row):
    """SIGKILL at random moments of a process rewriting a manifest over and over: every time, the
    manifest reads whole (the old one or a new one, never torn)."""
    row = fault_row("a kill during the manifest write (SIGKILL of its writer, 20 times)", resumes=False)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for name in (layout.MANIFEST,):
        (run_dir / name).write_bytes((reference / name).read_bytes())
    kills, whole = 20, 0
    for i in range(kills):
        writer = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(run_dir)], cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        assert writer.stdout.readline().strip() == "writing"
        time.sleep(0.01 * (i % 7))
        writer.kill()
        writer.wait()
        with contextlib.suppress(RunnerError):  # counted, asserted below
            m = records.read_manifest(run_dir)  # whole: the schema and the digest accept it
            whole += json.loads((run_dir / layout.MANIFEST).read_text())["run_id"] == m.run_id
    torn = [] if whole == kills else [f"{layout.MANIFEST} (torn by {kills - whole} of {kills} kills)"]
    row.observed(
        {"record whole after every kill": whole == kills},
        f"{whole} of {kills} kills left a whole record (the old one or the new)",
        tuple(torn),
    )
    assert whole == kills, torn
    for tmp in run_dir.glob(".manifest.json.*"):  # a killed writer's temp file: never read as the record
        assert tmp.name != layout.MANIFEST
