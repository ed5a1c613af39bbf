"""A run that asks for GPUs this host does not have is refused in one line, exit status 2, before
anything is fetched, built or started (issue 15). The decision is pure (runner.core.devices); the
facts are the driver's (`nvidia-smi -L`), read by runner.host.facts."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from runner.core.devices import VisibleGpus, gpu_refusal
from runner.host import facts
from tests.conftest import run_runner
from tests.run_records import make_run

NONE = VisibleGpus((), "nvidia-smi not found")
TWO = VisibleGpus((0, 1))
NO_ENGINE = {"DOCKER_HOST": "unix:///nonexistent"}  # a runner that reached for Docker would fail otherwise


@pytest.mark.parametrize(
    ("asked", "visible", "expected"),
    [
        (0, NONE, None),
        (None, NONE, None),
        (
            2,
            NONE,
            "launch.gpus=2 asks for GPUs, but no NVIDIA GPU is visible: nvidia-smi not found; "
            "run on the CPU with launch.gpus=0",
        ),
        (
            "all",
            NONE,
            "launch.gpus=all asks for GPUs, but no NVIDIA GPU is visible: nvidia-smi not found; "
            "run on the CPU with launch.gpus=0",
        ),
        (
            [0, 3],
            NONE,
            "launch.gpus=[0,3] asks for GPUs, but no NVIDIA GPU is visible: nvidia-smi not found; "
            "run on the CPU with launch.gpus=0",
        ),
        (2, TWO, None),
        ("all", TWO, None),
        ([1, 0], TWO, None),
        (
            3,
            TWO,
            "launch.gpus=3 asks for 3 GPUs, but this host has 2 GPUs (0, 1); ask for at most launch.gpus=2 "
            "(or launch.gpus=all), or use launch.gpus=0 for the CPU",
        ),
        (
            [0, 3],
            TWO,
            "launch.gpus=[0,3] names GPU 3, but this host has 2 GPUs (0, 1); name those, "
            "e.g. launch.gpus=[0], or use launch.gpus=0",
        ),
        (
            [1, 1],
            TWO,
            "launch.gpus=[1,1] names GPU 1 more than once (one process per GPU); this host has 2 GPUs (0, 1)",
        ),
        (["a"], TWO, "launch.gpus=[a]: 'a' is not a GPU index; this host has 2 GPUs (0, 1)"),
        (-1, NONE, None),  # malformed: the planner refuses it with its own message
    ],
)
def test_what_is_asked_against_what_is_there(asked, visible, expected):
    assert gpu_refusal(asked, visible) == expected


def _fake_nvidia_smi(bin_dir: Path, stdout: str, status: int = 0) -> dict[str, str]:
    """An `nvidia-smi` on PATH that answers `-L` as a driver would (this host has none)."""
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "nvidia-smi"
    script.write_text(f"#!/bin/sh\ncat <<'EOF'\n{stdout}\nEOF\nexit {status}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


LISTING = """GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-aaaa)
GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-bbbb)
  MIG 1g.10gb     Device  0: (UUID: MIG-cccc)"""


@pytest.mark.parametrize(
    ("stdout", "status", "ids", "why"),
    [
        (LISTING, 0, (0, 1), ""),
        ("", 0, (), "nvidia-smi -L lists no GPU"),
        (
            "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.",
            9,
            (),
            "nvidia-smi -L failed (exit status 9): NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.",  # noqa: E501 - verbatim data
        ),
    ],
)
def test_the_facts_are_the_drivers_listing(tmp_path, monkeypatch, stdout, status, ids, why):
    monkeypatch.setenv("PATH", _fake_nvidia_smi(tmp_path / "bin", stdout, status)["PATH"])
    assert facts.visible_gpus() == VisibleGpus(ids, why)
    assert facts.gpu_count() == len(ids)


def test_without_nvidia_smi_there_is_no_gpu(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert facts.visible_gpus() == VisibleGpus((), "nvidia-smi not found")


@contextlib.contextmanager
def _engine_socket() -> Iterator[tuple[dict[str, str], Callable[[], bool]]]:
    """A ``DOCKER_HOST`` that is a socket this test listens on and never answers, and a check of
    whether anything connected to it: a runner that reached for the engine (to look up, fetch or
    build an image, or start a container) would have."""
    with tempfile.TemporaryDirectory(dir="/tmp") as d, socket.socket(socket.AF_UNIX) as sock:
        path = os.path.join(d, "engine.sock")  # short: a socket's path has at most 107 bytes
        sock.bind(path)
        sock.listen(8)
        sock.setblocking(False)

        def contacted() -> bool:
            try:
                sock.accept()[0].close()
            except BlockingIOError:
                return False
            return True

        yield {"DOCKER_HOST": f"unix://{path}"}, contacted


@pytest.mark.skipif(
    bool(facts.visible_gpus().ids), reason="this host has GPUs: the refusal is for hosts without"
)
def test_a_gpu_run_on_a_cpu_host_is_refused_before_anything_is_fetched_or_built(tmp_path):
    cache = tmp_path / "cache"
    with _engine_socket() as (engine, contacted):
        for asked in ("2", "[0,3]", "all"):
            proc = run_runner(
                f"launch.gpus={asked}",
                f"hydra.run.dir={tmp_path / 'run'}",
                timeout=120,
                env={**engine, "RUNNER_CACHE": str(cache)},
            )
            _refused(proc, asked, tmp_path / "run")
        assert not contacted(), "the runner reached for the engine before refusing"
    assert not cache.exists() or not any(cache.rglob("*")), "something was fetched into the wheel/data cache"


def _refused(proc: subprocess.CompletedProcess, asked: str, run_dir: Path) -> None:
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [
        f"runner: error: launch.gpus={asked} asks for GPUs, but no NVIDIA GPU is visible: nvidia-smi not found; "  # noqa: E501 - verbatim data
        "run on the CPU with launch.gpus=0"
    ]
    assert not (run_dir / "manifest.json").exists()


def test_naming_a_gpu_the_driver_does_not_list_is_refused(tmp_path):
    path = _fake_nvidia_smi(tmp_path / "bin", LISTING)
    cache = tmp_path / "cache"
    proc = run_runner(
        "launch.gpus=[0,3]",
        "launch.backend=host",
        f"hydra.run.dir={tmp_path / 'run'}",
        timeout=120,
        env={**NO_ENGINE, **path, "RUNNER_CACHE": str(cache)},
    )
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert "launch.gpus=[0,3] names GPU 3, but this host has 2 GPUs (0, 1)" in proc.stderr
    proc = run_runner(
        "launch.gpus=4",
        f"hydra.run.dir={tmp_path / 'run'}",
        timeout=120,
        env={**NO_ENGINE, **path, "RUNNER_CACHE": str(cache)},
    )
    assert proc.returncode == 2 and "launch.gpus=4 asks for 4 GPUs, but this host has 2 GPUs" in proc.stderr
    assert not cache.exists() or not any(cache.rglob("*"))


@pytest.mark.skipif(
    bool(facts.visible_gpus().ids), reason="this host has GPUs: the refusal is for hosts without"
)
def test_replaying_a_gpu_run_on_a_cpu_host_is_refused_before_the_image_is_had(tmp_path):
    config = {
        "seed": 0,
        "experiment": {"name": "x", "script": "train.py"},
        "launch": {"gpus": 2, "backend": "docker"},
    }
    run = make_run(tmp_path / "gpu-run", config=config)
    with _engine_socket() as (engine, contacted):
        proc = run_runner(
            str(run), module="runner.replay", timeout=120, env={**engine, "RUNNER_CACHE": str(tmp_path / "c")}
        )
        assert not contacted(), "the replay reached for the engine before refusing"
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [
        "runner: error: the recorded config cannot be run: launch.gpus=2 asks for GPUs, but no NVIDIA GPU is "
        "visible: nvidia-smi not found; run on the CPU with launch.gpus=0"
    ]
    assert not (run / "replays").exists()
    assert json.loads((run / "manifest.json").read_text())["config"]["launch"]["gpus"] == 2


@pytest.mark.skipif(
    bool(facts.visible_gpus().ids), reason="this host has GPUs: the refusal is for hosts without"
)
def test_a_sweep_told_of_gpus_that_are_not_there_builds_nothing(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_runner(
        "-m",
        "launch.gpus=1",
        "seed=0,1",
        "hydra.launcher.gpus=[0,1]",
        f"hydra.sweep.dir={sweep}",
        timeout=300,
        env={**NO_ENGINE, "RUNNER_CACHE": str(tmp_path / "cache")},
    )
    assert proc.returncode == 1, proc.stderr  # the jobs failed; the engine was never asked for an image
    for job in ("0", "1"):
        status = json.loads((sweep / job / "job_status.json").read_text())
        assert (
            status["exit_code"] == 2 and "no NVIDIA GPU is visible: nvidia-smi not found" in status["error"]
        )
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*"))
