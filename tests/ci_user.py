"""The unprivileged user the rootless engines are tested as (``make charliecloud``/``make podman``
create it, ``useradd -m``): the runner itself runs as that user, from this checkout's interpreter.

:func:`popen_as` starts a command as the user through ``setpriv``, which becomes the command (no
process in between): a signal sent to the returned process reaches the runner itself.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.conftest import ROOT

CI_USER = "runner-ci"


def account() -> pwd.struct_passwd:
    return pwd.getpwnam(CI_USER)


def env() -> dict[str, str]:
    """A login-like environment of the user's own: no variable of the test process reaches it (its
    runtime dir is where a login has it: rootless Podman keeps its socket there). Git may read this
    checkout although root owns it (safe.directory), as the code snapshot does."""
    user = account()
    return {
        "HOME": user.pw_dir,
        "USER": user.pw_name,
        "LOGNAME": user.pw_name,
        "XDG_RUNTIME_DIR": f"/run/user/{user.pw_uid}",
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "safe.directory",
        "GIT_CONFIG_VALUE_0": "*",
    }


def argv(*command: str) -> list[str]:
    return ["setpriv", f"--reuid={CI_USER}", f"--regid={CI_USER}", "--init-groups", "--", *command]


def popen_as(*command: str, cwd: Path = ROOT) -> subprocess.Popen:
    return subprocess.Popen(
        argv(*command), cwd=cwd, env=env(), text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def run_as(*command: str, cwd: Path = ROOT, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(argv(*command), cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)


def python_as(*args: str, module: str = "runner", timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m MODULE args…`` as the user, with this checkout's interpreter."""
    return run_as(sys.executable, "-m", module, *args, timeout=timeout)


def scratch(prefix: str) -> Path:
    """A new directory the user owns, where it can reach it (not under root's own temp dirs)."""
    path = Path(tempfile.mkdtemp(prefix=f"runner-{prefix}-", dir="/tmp"))
    user = account()
    os.chown(path, user.pw_uid, user.pw_gid)
    return path


_ENGINE = "import sys; from runner.host.charliecloud_engine import CharliecloudEngine as E; "


def cpu_image(engine) -> tuple[str, str]:
    """The runner's CPU image on the Docker engine (found by its content hash, or built): tag and id."""
    from omegaconf import OmegaConf

    from runner.core import spec
    from runner.flows.cli_common import compose
    from runner.host import image_builder

    cfg = OmegaConf.to_container(compose(["image=cpu"]), resolve=True)
    plan = spec.plan_run(
        cfg, Path(tempfile.gettempdir()), ROOT, spec.Host(os.environ, os.getuid(), os.getgid())
    )
    resolved = image_builder.resolve_image(engine, plan, ROOT, echo=lambda line: None)
    return resolved.tag, resolved.record["id"]


def charliecloud_image(engine) -> tuple[str, str, float | None]:
    """The CPU image unpacked for Charliecloud in the user's own image cache, as the user would:
    saved to a file (``docker save``), then ``runner import FILE --engine charliecloud``. Cached by
    image id: a machine that holds it already saves and unpacks nothing. Returns tag, id and how
    long the unpack took (None: cached)."""
    tag, image_id = cpu_image(engine)
    if (
        run_as(sys.executable, "-c", _ENGINE + "print(E().image_id(sys.argv[1]))", tag).stdout.strip()
        == image_id
    ):
        return tag, image_id, None
    where = scratch("image")
    archive = where / "cpu.tar"
    try:
        with open(archive, "wb") as f:
            engine.save(tag, f)
        archive.chmod(0o644)
        started = time.monotonic()  # as a user does it: `runner import FILE --engine charliecloud`
        runner = str(Path(sys.executable).with_name("runner"))
        proc = run_as(runner, "import", str(archive), "--engine", "charliecloud", timeout=900)
        assert proc.returncode == 0 and proc.stdout.split() == [image_id, str(archive)], proc.stderr[-3000:]
        return tag, image_id, time.monotonic() - started
    finally:
        shutil.rmtree(where, ignore_errors=True)


def podman_image(engine) -> tuple[str, str]:
    """The CPU image and its base in the user's own Podman store, loaded from Docker's (``docker
    save | podman load``: the same ids) unless the very same ids are there. Returns tag and id."""
    tag, image_id = cpu_image(engine)
    base = "runner-base:bookworm"
    want = [i.removeprefix("sha256:") for i in (image_id, engine.image_id(base) or "")]
    have = run_as("podman", "image", "inspect", "--format", "{{.Id}}", tag, base)
    if have.returncode != 0 or have.stdout.split() != want:
        save = subprocess.Popen(["docker", "save", tag, base], stdout=subprocess.PIPE)
        load = subprocess.run(argv("podman", "load"), stdin=save.stdout, env=env(), capture_output=True)
        assert save.wait() == 0 and load.returncode == 0, load.stderr[-2000:]
    return tag, image_id
