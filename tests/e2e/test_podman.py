"""Rootless Podman, for real: the runner itself runs as an unprivileged user (``runner-ci``, made by
``scripts/ensure-podman.sh``, which ``make test`` runs through ``make podman``) with ``engine=podman``,
in a run dir that user owns. Nothing is mocked: the runner finds no Podman service, starts the
user's own (``podman --runtime runc system service``), trains in a rootless container and stops the
service again.

The image is Docker's, loaded into the user's own image store (``docker save | podman load``: the
same image id, so the same bits; faster than building it again in that store). Under Podman the
same strict run gives the weights Docker gives; every lock of the container holds; a limit a
rootless engine on cgroup v1 cannot apply is said and recorded; replay and interrupt/resume work.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from runner.core import layout
from runner.core.layout import latest_checkpoint
from tests import ci_user
from tests.conftest import ROOT, manifest, run_runner
from tests.live_runs import PROBE, finish, last_step, probe_args, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.podman]

USER = ci_user.CI_USER
PYTHON = ROOT / ".venv" / "bin" / "python"
ZERO_CAPS = "0000000000000000"
# short but real: 2 DDP ranks, dropout on (torch's RNG matters), 16 steps an epoch, a checkpoint
# every 10 steps, so that a resume from step 20 lands mid-epoch
TRAINING = [
    "model.train_samples=2048",
    "trainer.max_steps=40",
    "trainer.max_epochs=3",
    "fingerprints.every_k_steps=4",
    "launch.checkpoint_every_n_steps=10",
    "model.dropout=0.25",
]


@dataclass(frozen=True)
class User:
    """The unprivileged user the runner runs as, and a directory of its own for run dirs."""

    name: str
    uid: int
    gid: int
    home: str
    work: Path
    started: list[subprocess.Popen] = field(default_factory=list)  # stopped after each test

    @property
    def env(self) -> dict[str, str]:
        return ci_user.env()

    def argv(self, *args: str) -> list[str]:
        return ci_user.argv(*args)

    def run(self, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
        return ci_user.run_as(*args, timeout=timeout)

    def runner(self, *args: str, module: str = "runner") -> subprocess.CompletedProcess:
        return self.run(str(PYTHON), "-m", module, *args)

    def start(self, *args: str) -> subprocess.Popen:
        proc = ci_user.popen_as(str(PYTHON), "-m", "runner", *args)
        self.started.append(proc)  # stopped after the test if it is still running
        return proc

    def podman(self, *args: str) -> str:
        out = self.run("podman", "--runtime", "runc", *args)
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout


@pytest.fixture(scope="module")
def user() -> Iterator[User]:
    """``runner-ci``, able to run the project's Python and its own Podman; its run dirs removed after."""
    try:
        pw = ci_user.account()
    except KeyError:
        pytest.fail(f"no user {USER}: run `make podman` (scripts/ensure-podman.sh) first")
    work = ci_user.scratch("podman")
    u = User(USER, pw.pw_uid, pw.pw_gid, pw.pw_dir, work)
    can = u.run(str(PYTHON), "-c", "import runner, docker")
    assert can.returncode == 0, f"{USER} cannot run {PYTHON}: `make podman` fixes that ({can.stderr[-300:]})"
    yield u
    shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(autouse=True)
def _no_runner_of_the_user_outlives_its_test(user: User) -> Iterator[None]:
    """A runner a failed test left running gets SIGTERM: it stops its container and its service."""
    yield
    while user.started:
        proc = user.started.pop()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            finish(proc)


@pytest.fixture(scope="module")
def docker_probe(tmp_path_factory, engine) -> Path:
    """The probe under Docker, as root: what a container sees there (and the run's image)."""
    run_dir = tmp_path_factory.mktemp("docker") / "probe"
    p = run_runner(f"hydra.run.dir={run_dir}", *PROBE, probe_args("report"))
    assert p.returncode == 0, p.stderr[-3000:]
    return run_dir


@pytest.fixture(scope="module")
def image(docker_probe: Path, user: User) -> str:
    """Docker's image (and its base) in the user's own store: loaded unless the very same image ids
    are there already."""
    rec = manifest(docker_probe)["image"]
    have = user.run("podman", "image", "inspect", "--format", "{{.Id}}", rec["tag"], rec["base_ref"])
    if have.returncode != 0 or have.stdout.split() != [rec["id"].split(":")[1], rec["base_id"].split(":")[1]]:
        save = subprocess.Popen(["docker", "save", rec["tag"], rec["base_ref"]], stdout=subprocess.PIPE)
        load = subprocess.run(
            user.argv("podman", "load"), stdin=save.stdout, env=user.env, capture_output=True
        )
        assert save.wait() == 0 and load.returncode == 0, load.stderr[-2000:]
    return rec["tag"]


@pytest.fixture(scope="module")
def podman_run(user: User, image: str) -> Path:
    """The strict run under rootless Podman, as the user."""
    run_dir = user.work / "podman"
    p = user.runner("engine=podman", f"hydra.run.dir={run_dir}", *TRAINING)
    assert p.returncode == 0, p.stderr[-3000:]
    return run_dir


def _service_is_gone(user: User) -> None:
    """The runner stopped the service it started (on a socket of its own, beside the user's):
    no socket and no log of one is left, and no `podman system service` of the user runs."""
    left = sorted(p.name for p in (Path(user.env["XDG_RUNTIME_DIR"]) / "podman").glob("*.sock"))
    assert left == [], f"{left}: the runner left its podman service running"


def _containers(user: User, run_dir: Path) -> list[str]:
    out = user.podman("ps", "-a", "--filter", f"label=org.runner.run-dir={run_dir}", "--format", "{{.ID}}")
    return out.split()


# -- the same bits ---------------------------------------------------------------------------------------
def test_a_strict_run_under_rootless_podman_replays_bit_identical_there_and_under_docker(
    podman_run, user, tmp_path
):
    m = manifest(podman_run)
    assert m["status"] == "completed" and m["launch"]["user"] == f"{user.uid}:{user.gid}"
    assert m["engine"] == {"name": "podman", "version": "4.3.1", "rootless": True, "unenforced": []}
    assert (podman_run / "outputs" / "model.pt").stat().st_uid == user.uid  # keep-id: the user's files
    _service_is_gone(user)
    assert _containers(user, podman_run) == []

    # as the user, on the engine the record names (podman), into the run's own replays/
    p = user.runner(str(podman_run), "--json", module="runner.replay")
    assert p.returncode == 0, p.stderr[-3000:]
    verdict = json.loads(p.stdout)
    assert verdict["bit_identical"] is True and manifest(verdict["replay"])["engine"]["name"] == "podman"
    _service_is_gone(user)

    # as root under Docker, chosen by name: the same run, the same image content, the same bits
    out = tmp_path / "on-docker"
    p = run_runner(str(podman_run), "--out", str(out), "--engine", "docker", module="runner.replay")
    assert p.returncode == 0, p.stderr[-3000:]
    d = manifest(out)
    assert d["engine"]["name"] == "docker" and d["engine"]["rootless"] is False
    assert d["image"]["id"] == m["image"]["id"] and d["config"] == m["config"]
    assert d["outputs"]["model.pt"] == m["outputs"]["model.pt"]
    assert (out / "fingerprints.jsonl").read_bytes() == (podman_run / "fingerprints.jsonl").read_bytes()
    assert d["determinism"]["flags"] == m["determinism"]["flags"]


def test_interrupted_under_podman_then_resumed_gives_the_same_weights(podman_run, user):
    run_dir = user.work / "cut"
    proc = user.start("engine=podman", f"hydra.run.dir={run_dir}", *TRAINING)
    wait_for(lambda: last_step(run_dir) >= 24, proc=proc)
    proc.send_signal(signal.SIGTERM)
    code, _, err = finish(proc)
    assert code == 130 and manifest(run_dir)["status"] == "interrupted", err[-3000:]
    assert _containers(user, run_dir) == [] and not (run_dir / layout.CLAIM).exists()
    _service_is_gone(user)
    found = latest_checkpoint(run_dir / "checkpoints")
    assert found is not None and found[0] == 20

    p = user.runner(f"+resume={run_dir}")  # on the engine the record names
    assert p.returncode == 0, p.stderr[-3000:]
    m = manifest(run_dir)
    assert m["status"] == "completed" and m["resumes"][0]["from_step"] == 20
    assert m["engine"]["name"] == "podman"
    assert m["outputs"]["model.pt"] == manifest(podman_run)["outputs"]["model.pt"]
    assert (run_dir / "fingerprints.jsonl").read_bytes() == (podman_run / "fingerprints.jsonl").read_bytes()
    _service_is_gone(user)


# -- the locks -------------------------------------------------------------------------------------------
def test_every_lock_holds_and_a_limit_it_cannot_apply_is_said_and_recorded(user, image, docker_probe):
    run_dir = user.work / "probe"
    proc = user.start(
        "engine=podman",
        f"hydra.run.dir={run_dir}",
        *PROBE,
        probe_args("report", "--wait", "go"),
        "launch.cpuset_cpus=0",
        "launch.mem_limit=1g",
    )
    (cid,) = wait_for(lambda: _containers(user, run_dir), proc=proc)
    (seen,) = json.loads(user.podman("inspect", cid))
    (run_dir / "go").touch()
    code, _, err = finish(proc)
    assert code == 0, err[-3000:]

    # from outside, while it ran
    hc, cfg = seen["HostConfig"], seen["Config"]
    assert hc["NetworkMode"] == "none" and hc["ReadonlyRootfs"] is True and hc["Privileged"] is False
    assert "no-new-privileges" in hc["SecurityOpt"] and not hc.get("CapAdd")
    assert f"{user.uid}:0:1" in hc["IDMappings"]["UidMap"]  # keep-id: the user's uid is the user's inside
    assert cfg["User"] == f"{user.uid}:{user.gid}"
    mounts = {m["Destination"]: m["RW"] for m in seen["Mounts"]}
    assert mounts == {"/code": False, "/data": False, "/job": True}
    # from inside
    facts = json.loads((run_dir / "outputs" / "probe.json").read_text())
    assert facts["uid"] == user.uid and 0 not in facts["groups"]
    assert facts["interfaces"] == ["lo"]
    assert all(facts["writes"][d] == "EROFS" for d in ("/code", "/data", "/usr", "/", "/etc")), facts[
        "writes"
    ]
    assert facts["writes"]["/job"] == "ok"
    status = facts["status"]
    assert all(status[k] == ZERO_CAPS for k in ("CapEff", "CapPrm", "CapBnd", "CapAmb", "CapInh")), status
    assert status["NoNewPrivs"] == "1"
    # exactly the profile's variables: the names Docker's container has, none of Podman's own
    under_docker = json.loads((docker_probe / "outputs" / "probe.json").read_text())
    assert facts["env_names"] == under_docker["env_names"]
    assert not {"TERM", "container"} & set(facts["env_names"])

    # cores and memory: not applied rootless on cgroup v1, and never silently
    unenforced = ["cpuset_cpus=0", "mem_limit=1g"]
    assert manifest(run_dir)["engine"]["unenforced"] == unenforced
    warned = [line for line in err.splitlines() if "cannot enforce" in line]
    assert warned == [
        "warning: podman 4.3.1 (rootless) cannot enforce cpuset_cpus=0, mem_limit=1g here: the run goes on "
        "without it (recorded as the manifest's engine.unenforced)"
    ]
    _service_is_gone(user)


@contextlib.contextmanager
def _users_own_service(user: User) -> Iterator[subprocess.Popen]:
    """The user's Podman service, started (and stopped) by the user, not by the runner."""
    sock = Path(user.env["XDG_RUNTIME_DIR"]) / "podman" / "podman.sock"
    service = subprocess.Popen(
        user.argv("podman", "--runtime", "runc", "system", "service", "--time=0", f"unix://{sock}"),
        env=user.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(sock.exists, timeout=30, proc=service)
        yield service
    finally:
        service.terminate()
        service.wait(30)


# A container tied to the process that started it (a multi-node run's node agents): its exit status
# comes back, and when that process dies without a word, the container ends and is removed.
LIFELINE = """
import os, sys
from runner.core.engine_types import ContainerRequest
from runner.host.docker_engine import PodmanEngine
image, name, script, how = sys.argv[1:]
engine = PodmanEngine(start_service=False)
req = ContainerRequest(image=image, name=name, command=["sh", "-c", script], environment={},
    user=f"{os.getuid()}:{os.getgid()}", mounts=[], working_dir="/tmp", lifeline=True)
container = engine.start(req)
if how == "die":
    print("started", flush=True)
    os._exit(0)
print(engine.wait(container).exit_code)
"""


def test_a_lifeline_container_reports_its_exit_and_ends_with_its_process(user, image):
    with _users_own_service(user):
        p = user.run(str(PYTHON), "-c", LIFELINE, image, "lifeline-exit", "exit 7", "wait")
        assert p.returncode == 0 and p.stdout.split() == ["7"], p.stderr[-2000:]
        # `read` returns when standard input closes: when the process holding it is gone
        p = user.run(str(PYTHON), "-c", LIFELINE, image, "lifeline-die", "read x; exit 3", "die")
        assert p.returncode == 0 and p.stdout.split() == ["started"], p.stderr[-2000:]
        names = lambda: user.podman("ps", "-a", "--format", "{{.Names}}").split()  # noqa: E731
        wait_for(lambda: "lifeline-die" not in names(), timeout=60)
        assert "lifeline-exit" not in names()
    _service_is_gone(user)


PULL = """
import sys
from runner.host.docker_engine import PodmanEngine
engine = PodmanEngine(start_service=False)
print(engine.pull(sys.argv[1]), engine.pull(sys.argv[2]))
"""


def test_the_user_pulls_an_image_by_digest_from_the_local_registry(user, engine):
    """Docker pushes, the user's rootless Podman pulls by digest: the same image id (the registry
    is `make registry`'s, on 127.0.0.1 without TLS, which `make podman` lets Podman use)."""
    base = "runner-base:bookworm"
    digest = engine.push(base, "127.0.0.1:5000/runner-test-podman:bookworm")
    ref = f"127.0.0.1:5000/runner-test-podman@{digest}"
    other = ref[:-1] + ("1" if ref[-1] == "0" else "0")  # a digest the registry does not hold
    with _users_own_service(user):
        p = user.run(str(PYTHON), "-c", PULL, ref, other)
        assert p.returncode == 0, p.stderr[-2000:]
        pulled, wrong = p.stdout.split()
        user.podman("rmi", ref)
    assert pulled == engine.image_id(base) and wrong == "None"


def test_a_service_that_already_answers_is_used_and_left_running(user, image):
    sock = Path(user.env["XDG_RUNTIME_DIR"]) / "podman" / "podman.sock"
    with _users_own_service(user) as service:
        run_dir = user.work / "theirs"
        p = user.runner("engine=podman", f"hydra.run.dir={run_dir}", *PROBE, probe_args("report"))
        assert p.returncode == 0, p.stderr[-3000:]
        assert manifest(run_dir)["engine"]["name"] == "podman"
        assert service.poll() is None and sock.exists()  # not the runner's to stop
    _service_is_gone(user)


def test_runs_side_by_side_each_stop_only_their_own_service(user, image):
    """The first run to end stops the service it started; the other, still running, is not hurt."""
    dirs = [user.work / "side-a", user.work / "side-b"]
    procs = [
        user.start("engine=podman", f"hydra.run.dir={d}", *PROBE, probe_args("report", "--wait", "go"))
        for d in dirs
    ]
    for d, proc in zip(dirs, procs, strict=True):
        wait_for(lambda d=d: _containers(user, d), proc=proc)
    for d, proc in zip(dirs, procs, strict=True):
        (d / "go").touch()
        code, _, err = finish(proc)
        assert code == 0, err[-3000:]
        assert _containers(user, d) == [] and manifest(d)["status"] == "completed"
    _service_is_gone(user)


def test_a_podman_service_that_cannot_start_is_one_line_and_leaves_a_whole_record(user):
    run_dir = user.work / "no-podman"
    nowhere = "unix:///proc/no-such-dir/podman.sock"  # nothing answers there, and no service can listen
    p = user.runner("engine=podman", f"launch.engine.base_url={nowhere}", f"hydra.run.dir={run_dir}", *PROBE)
    assert p.returncode == 3, p.stderr[-2000:]
    line = p.stderr.strip().splitlines()[-1]
    assert line.startswith(
        "runner: error: cannot start podman system service on unix:///proc/no-such-dir/runner-"
    )
    assert manifest(run_dir)["status"] == "failed" and "Traceback" not in p.stderr
