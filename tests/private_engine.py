"""A Docker engine of a test's own: a private ``dockerd`` that the test may stop and start again.

The machine's dockerd is shared (other tests, other people): a test never restarts it. A
:class:`PrivateDockerd` listens on its own socket, keeps its images, containers and state in
its own directories (``--data-root``, ``--exec-root``, ``--pidfile``, its own containerd under
them) and has no network of its own (``--bridge=none --iptables=false --ip-masq=false``), as the
shared one. All of it lives on a tmpfs of its own (root, as CI runs): images load into memory, and
:meth:`PrivateDockerd.close` stops it and unmounts, instead of deleting some 40,000 files of an
unpacked image from disk (about 20 s). Images come from the shared engine (``docker save | docker
load``).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import docker
import docker.errors

from runner.host import procfs


class PrivateDockerd:
    """A dockerd under ``/tmp/runner-dockerd-*`` (a short path: a unix socket's is at most 107
    bytes), started by :meth:`start`; ``url`` is what ``DOCKER_HOST`` names to reach it."""

    def __init__(self, size: str = "4g") -> None:
        self.root = Path(tempfile.mkdtemp(prefix="runner-dockerd-", dir="/tmp"))
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(self.root)], check=True
        )
        self.url = f"unix://{self.root / 'docker.sock'}"
        (self.root / "daemon.json").write_text("{}\n")  # not the machine's /etc/docker/daemon.json
        self.proc: subprocess.Popen | None = None

    def argv(self) -> list[str]:
        return [
            "dockerd",
            f"--host={self.url}",
            f"--data-root={self.root / 'data'}",
            f"--exec-root={self.root / 'exec'}",
            f"--pidfile={self.root / 'docker.pid'}",
            f"--config-file={self.root / 'daemon.json'}",
            "--bridge=none",
            "--iptables=false",
            "--ip-masq=false",
        ]

    def start(self, timeout: float = 60) -> None:
        """Start it (again) and wait until it answers."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        with (self.root / "dockerd.log").open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv(), stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while not self.answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the private dockerd did not come up:\n{self.log_tail()}")
            time.sleep(0.1)

    def stop(self, timeout: float = 60) -> None:
        """SIGTERM, as ``systemctl stop`` or a restart sends it; wait until it is gone."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        """SIGKILL, as a crash ends it: its socket file stays, its containers run on (containerd's
        shims keep them) until it starts again and stops and removes them."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        # its containerd dies with it (parent-death signal), and lingers as a zombie until this
        # machine's init reaps it; a dockerd started meanwhile would take it for a live containerd
        # and wait for it in vain: as a service manager would, let the next start have a new one
        pidfile = self.root / "exec" / "containerd" / "containerd.pid"
        with contextlib.suppress(OSError, ValueError):
            pid = int(pidfile.read_text())
            deadline = time.monotonic() + 10
            while running(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if not running(pid):
                pidfile.unlink()

    def answers(self) -> bool:
        try:
            with contextlib.closing(docker.APIClient(base_url=self.url, timeout=5)) as api:
                return bool(api.ping())
        except (docker.errors.DockerException, OSError):
            return False

    def client(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.url, timeout=60)

    def load_from_shared(self, *refs: str) -> float:
        """Copy images from the machine's engine (``docker save | docker load``); returns seconds."""
        started = time.monotonic()
        save = subprocess.Popen(["docker", "save", *refs], stdout=subprocess.PIPE)
        assert save.stdout is not None
        load = subprocess.run(
            ["docker", "--host", self.url, "load", "--quiet"], stdin=save.stdout, capture_output=True
        )
        save.stdout.close()
        assert save.wait() == 0 and load.returncode == 0, load.stderr.decode(errors="replace")
        return time.monotonic() - started

    def log_tail(self, n: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join((self.root / "dockerd.log").read_text(errors="replace").splitlines()[-n:])
        return ""

    def close(self) -> None:
        """Stop it, and take down its file system with all it wrote (and any mount it left on it).
        One that was killed is started again first: it stops what it left running, and removes it."""
        if self.proc is not None and self.proc.poll() is not None:
            with contextlib.suppress(AssertionError):
                self.start()
        self.stop()
        with contextlib.suppress(OSError):
            mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
            for where in sorted((m for m in mounts if m.startswith(f"{self.root}/")), reverse=True):
                subprocess.run(["umount", "-l", where], check=False, capture_output=True)
        subprocess.run(["umount", "-l", str(self.root)], check=False, capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


def running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, ended but not yet reaped, does not)."""
    fields = procfs.stat(pid)
    return fields is not None and not procfs.ended(fields)
