"""``runner lock [KIND …]``: the project's hash-pinned image locks from its image inputs.

``images/<kind>.in`` → ``images/<kind>.lock`` with pip-compile (pip-tools), as ``make lock`` does
for the runner itself: every package pinned with every wheel's sha256, so a build installs them
with no network from the wheelhouse the runner fetches on the host. A changed lock changes the
image's tag: the next run builds it.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
from pathlib import Path

from runner.core.commands import COMMANDS
from runner.core.errors import EXIT_ENVIRONMENT, EXIT_USAGE, RunnerError
from runner.host.project import find_root

COMPILE = [
    "--quiet",
    "--generate-hashes",
    "--allow-unsafe",
    "--no-header",
    "--no-emit-index-url",
    "--no-emit-find-links",
    "--strip-extras",
]


def lock(inputs: Path, output: Path) -> None:
    """Compile one ``.in`` into its ``.lock``; one line on failure."""
    if importlib.util.find_spec("piptools") is None:
        raise RunnerError("runner lock needs pip-tools: pip install pip-tools", EXIT_ENVIRONMENT)
    cmd = [sys.executable, "-m", "piptools", "compile", *COMPILE, "-o", str(output), str(inputs)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = " | ".join(line.strip() for line in proc.stderr.strip().splitlines()[-3:])
        raise RunnerError(f"cannot lock {inputs}: {tail}", EXIT_ENVIRONMENT)


def main(args: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="runner lock", description=COMMANDS["lock"])
    parser.add_argument("kinds", nargs="*", help="image kinds (cpu, cuda); default: every images/*.in")
    kinds = parser.parse_args(args).kinds
    images = find_root() / "images"
    inputs = [images / f"{k}.in" for k in kinds] if kinds else sorted(images.glob("*.in"))
    missing = [str(p) for p in inputs if not p.is_file()]
    if missing or not inputs:
        raise RunnerError(
            f"no image inputs to lock: {', '.join(missing) or images / '*.in'} (runner init writes them)",
            EXIT_USAGE,
        )
    for path in inputs:
        print(f"locking {path.name} → {path.with_suffix('.lock').name}", flush=True)
        lock(path, path.with_suffix(".lock"))
    return 0
