"""The container's security posture, asserted against the real engine from both sides: the probe
experiment reports what it can do from inside, the test inspects the live container from outside.

Not root; no network but loopback (a TCP connect to 1.1.1.1:53 and to this host fails, though the
same connect from the host succeeds); code, data and image read-only; no capabilities and
no-new-privileges; no engine socket, ever; secret-looking environment variables reach the
container only when listed, and their values are written nowhere in the run dir.
"""

from __future__ import annotations

import json
import socket
import subprocess
import uuid
from pathlib import Path

import pytest

from runner.core.errors import RunnerError
from runner.host.engine import engine_sockets, refuse_engine_sockets
from tests.conftest import manifest, run_runner
from tests.data.probe_experiment.probe import connect
from tests.live_runs import PROBE, containers_of, finish, probe_args, start, wait_for

ZERO_CAPS = "0000000000000000"


def _host_ipv4() -> list[str]:
    """This host's non-loopback IPv4 addresses."""
    out = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout
    return [
        line.split()[3].split("/")[0]
        for line in out.splitlines()
        if " lo " not in line and len(line.split()) > 3
    ]


@pytest.mark.docker
def test_container_posture_from_inside_and_outside(tmp_path, engine):
    run_dir = tmp_path / "run"
    listener = socket.create_server(("0.0.0.0", 0))  # something on the host to (fail to) reach
    port = listener.getsockname()[1]
    targets = ["1.1.1.1:53", *(f"{ip}:{port}" for ip in _host_ipv4())]
    assert len(targets) > 1, "no host address to probe"
    secrets = {
        name: f"s3cret-{uuid.uuid4().hex}"
        for name in (
            "PROBE_API_TOKEN",
            "DB_PASSWORD",
            "MY_SECRET",
            "AWS_SECRET_ACCESS_KEY",
            "SERVICE_CREDENTIAL",
            "SSH_KEY",
        )
    }
    listed = {"PROBE_LISTED_KEY": f"listed-{uuid.uuid4().hex}"}
    try:
        proc = start(
            run_dir,
            *PROBE,
            "launch.env_passthrough=[PROBE_LISTED_KEY,PROBE_PLAIN]",
            probe_args(
                "report",
                "--wait",
                "go",
                *(x for t in targets for x in ("--connect", t)),
                "--env",
                "PROBE_LISTED_KEY",
            ),
            env={**secrets, **listed, "PROBE_PLAIN": "hello"},
        )
        (container,) = wait_for(lambda: containers_of(engine, run_dir), proc=proc)

        # from outside, while it runs
        hc, cfg = container.attrs["HostConfig"], container.attrs["Config"]
        assert hc["NetworkMode"] == "none" and hc["CapDrop"] == ["ALL"] and not hc.get("CapAdd")
        assert "no-new-privileges" in (hc.get("SecurityOpt") or []) and hc["ReadonlyRootfs"] is True
        assert hc["Privileged"] is False and not hc.get("Devices") and hc.get("PidMode") in ("", None)
        assert cfg["User"] and cfg["User"].split(":")[0] not in ("0", "root")
        mounts = {m["Destination"]: m for m in container.attrs["Mounts"]}
        assert set(mounts) == {"/code", "/data", "/job"}, mounts
        assert (
            mounts["/code"]["RW"] is False and mounts["/data"]["RW"] is False and mounts["/job"]["RW"] is True
        )
        assert not any("docker.sock" in m["Source"] or "containerd" in m["Source"] for m in mounts.values())
        assert not any(e.partition("=")[0] in secrets for e in cfg["Env"])
        (run_dir / "go").touch()
        code, _, err = finish(proc)
        assert code == 0, err[-3000:]
        # the control: from the host the same check reaches the listener, so "unreachable" means something
        assert connect(targets[1].rpartition(":")[0], port) == "ok"
    finally:
        listener.close()

    # from inside
    facts = json.loads((run_dir / "outputs" / "probe.json").read_text())
    assert facts["uid"] != 0 and facts["euid"] != 0 and 0 not in facts["groups"]
    assert all(result != "ok" for result in facts["connect"].values()), facts["connect"]
    assert facts["interfaces"] == ["lo"] and facts["loopback"] is True  # gloo still has loopback
    writes = facts["writes"]
    assert all(writes[d] == "EROFS" for d in ("/code", "/data", "/usr", "/", "/etc")), writes
    assert writes["/job"] == "ok" and writes["/tmp"] == "ok"
    status = facts["status"]
    assert all(status[k] == ZERO_CAPS for k in ("CapEff", "CapPrm", "CapBnd", "CapAmb", "CapInh")), status
    assert status["NoNewPrivs"] == "1"
    assert facts["docker_socket"] == []

    # secrets: only the listed one crossed, and no value is written anywhere in the run dir
    assert not set(secrets) & set(facts["env_names"])
    assert {"PROBE_LISTED_KEY", "PROBE_PLAIN"} <= set(facts["env_names"])
    import hashlib

    assert (
        facts["env_sha256"]["PROBE_LISTED_KEY"]
        == hashlib.sha256(listed["PROBE_LISTED_KEY"].encode()).hexdigest()
    )
    env = manifest(run_dir)["environment"]
    assert env["PROBE_LISTED_KEY"] == "<redacted>" and env["PROBE_PLAIN"] == "hello"
    assert not set(secrets) & set(env)
    values = [v.encode() for v in (*secrets.values(), *listed.values())]
    for path in (p for p in run_dir.rglob("*") if p.is_file()):
        data = path.read_bytes()
        assert not any(v in data for v in values), f"a secret's value was written to {path}"


@pytest.mark.docker
def test_a_mount_holding_the_engine_socket_is_refused(tmp_path, engine):
    """``dataset.root=/var/run`` would bind the Docker socket into the container: refused, no container."""
    run_dir = tmp_path / "run"
    files = ",".join(
        f"{k}: docker.pid" for k in ("train_images", "train_labels", "test_images", "test_labels")
    )
    p = run_runner(
        f"hydra.run.dir={run_dir}",
        *PROBE,
        probe_args("report"),
        "dataset.root=/var/run",
        f"dataset.files={{{files}}}",
    )
    assert p.returncode == 2 and "engine's socket" in p.stderr and "Traceback" not in p.stderr, p.stderr[
        -2000:
    ]
    assert containers_of(engine, run_dir) == []
    assert manifest(run_dir)["status"] == "failed"


def test_engine_socket_guard_follows_links_and_docker_host(tmp_path):
    sock_dir = tmp_path / "engine"
    sock_dir.mkdir()
    (tmp_path / "alias").symlink_to(sock_dir)
    socks = engine_sockets({"DOCKER_HOST": f"unix://{tmp_path / 'alias' / 'd.sock'}"})
    assert sock_dir / "d.sock" in socks and Path("/run/docker.sock") in socks
    for src in (str(tmp_path), str(tmp_path / "alias"), str(sock_dir / "d.sock")):
        with pytest.raises(RunnerError):
            refuse_engine_sockets([(src, "/data", True)], socks)
    refuse_engine_sockets([(str(tmp_path / "other"), "/data", True), ("/usr/share", "/code", True)], socks)


def test_root_in_the_container_is_refused(tmp_path):
    p = run_runner(f"hydra.run.dir={tmp_path / 'run'}", "launch.user=0:0", *PROBE, probe_args("report"))
    assert p.returncode == 2 and "must not be root" in p.stderr and "Traceback" not in p.stderr
