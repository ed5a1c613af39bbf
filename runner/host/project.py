"""Which project a command works on, and where the runner's own built-in files are.

The project is the git repository the command is started in (its working tree is what a run
snapshots, its ``conf/`` is the primary config, its experiments are importable), unless
``RUNNER_PROJECT`` names one. Outside any git repository the runner's own checkout is the project,
as it is when the runner runs from its source tree.

The built-in files (config groups, Dockerfiles, image locks) live at the top of the runner's
source tree; an installed wheel carries a copy under ``runner/_builtin/`` (made by ``setup.py``).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parents[1]  # runner/


def builtin_dir() -> Path:
    """The directory holding the runner's ``conf/``, ``images/`` and ``Dockerfile.*``."""
    installed = _PACKAGE / "_builtin"
    return installed if (installed / "conf" / "config.yaml").is_file() else _PACKAGE.parent


def builtin_conf() -> Path:
    return builtin_dir() / "conf"


def _git_toplevel(cwd: Path) -> Path | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(cwd), "rev-parse", "--show-toplevel"],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    top = out.stdout.strip()
    return Path(top).resolve() if top else None


def find_root(cwd: Path | None = None, env: dict[str, str] | None = None) -> Path:
    """``RUNNER_PROJECT``, else the git repository holding ``cwd``, else the runner's own tree."""
    env = dict(os.environ) if env is None else env
    if env.get("RUNNER_PROJECT"):
        return Path(env["RUNNER_PROJECT"]).resolve()
    return _git_toplevel(cwd or Path.cwd()) or builtin_dir()


def conf_dir(root: Path) -> Path:
    """The primary config directory: the project's ``conf/`` when it has a ``config.yaml``, else the
    runner's built-in one (whose groups a project's ``conf/`` composes with in any case)."""
    own = root / "conf"
    return own if (own / "config.yaml").is_file() else builtin_conf()
