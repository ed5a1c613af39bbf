"""Podman's figure: training throughput in a rootless Podman container ÷ on the host, beside the
same ratio under Docker; one set of runs, same steps, interleaved (the order rotates each repetition).

Run it as root: Docker needs it, and the Podman runs go as the unprivileged user ``make podman``
makes (``runner-ci``), with Docker's image loaded into that user's own store first if it is not
there (``docker save | podman load``: the same image id)::

    .venv/bin/python -m bench.podman --out bench/results/podman.json [--reps 3] [--set OVERRIDE …]
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from bench import runs
from bench.results import load_average, median

STEPS = ["trainer.max_steps=100"]
USER = "runner-ci"


def _as_user(user: pwd.struct_passwd) -> tuple[tuple[str, ...], dict[str, str]]:
    """The command prefix and the login environment that run the runner as ``user``."""
    prefix = ("setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups", "--")
    env = {
        "HOME": user.pw_dir,
        "USER": user.pw_name,
        "LOGNAME": user.pw_name,
        "XDG_RUNTIME_DIR": f"/run/user/{user.pw_uid}",
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "safe.directory",
        "GIT_CONFIG_VALUE_0": str(runs.ROOT),
    }
    return prefix, env


def _load_image(manifest: Path, prefix: tuple[str, ...], env: dict[str, str]) -> None:
    """Docker's image of ``manifest``'s run, and its base, into the user's store (unless there)."""
    rec = json.loads(manifest.read_text())["image"]
    have = subprocess.run(
        [*prefix, "podman", "image", "inspect", "--format", "{{.Id}}", rec["tag"], rec["base_ref"]],
        env=env,
        capture_output=True,
        text=True,
    )
    if have.returncode == 0 and have.stdout.split() == [rec["id"][7:], rec["base_id"][7:]]:
        return
    save = subprocess.Popen(["docker", "save", rec["tag"], rec["base_ref"]], stdout=subprocess.PIPE)
    subprocess.run([*prefix, "podman", "load"], stdin=save.stdout, env=env, check=True, capture_output=True)
    if save.wait() != 0:
        raise SystemExit("docker save failed")


def measure(overrides: list[str], reps: int, work: Path) -> dict:
    user = pwd.getpwnam(USER)
    os.chown(work, user.pw_uid, user.pw_gid)
    prefix, env = _as_user(user)
    load = load_average()
    sides = ("docker", "host", "podman")
    got: dict[str, list[runs.TimedRun]] = {side: [] for side in sides}
    for i in range(reps):
        for side in sides[i % 3 :] + sides[: i % 3]:
            run_dir = work / f"{side}-{i}"
            if side == "podman":
                _load_image(work / "docker-0" / "manifest.json", prefix, env)
                got[side].append(runs.run([*overrides, "engine=podman"], run_dir, env=env, prefix=prefix))
            else:
                got[side].append(runs.run([*overrides, f"launch.backend={side}"], run_dir))
            print(
                f"  rep {i + 1}/{reps} {side}: {got[side][-1].samples_per_second:.0f} samples/s", flush=True
            )
    speed = {side: [r.samples_per_second for r in got[side]] for side in sides}
    return {
        "load_average_at_start": load,
        "overrides": overrides,
        "reps": reps,
        "order": "rotating: docker,host,podman then host,podman,docker, …",
        "measured_by": got["docker"][0].speed_source,
        "samples_per_second": speed,
        "podman_over_host": median([p / h for p, h in zip(speed["podman"], speed["host"], strict=True)]),
        "docker_over_host": median([d / h for d, h in zip(speed["docker"], speed["host"], strict=True)]),
        "podman_over_docker": median([p / d for p, d in zip(speed["podman"], speed["docker"], strict=True)]),
        "wall_seconds": {side: [round(r.wall_seconds, 1) for r in got[side]] for side in sides},
        "load_average_at_end": load_average(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.podman", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="where the JSON figures go")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each side (median quoted)")
    parser.add_argument("--set", nargs="*", default=STEPS, metavar="OVERRIDE", help="the runs' overrides")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-podman-"))
    try:
        figures = measure(list(args.set), args.reps, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
