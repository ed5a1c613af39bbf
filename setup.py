"""Packaging hook: the runner's built-in files (``conf/``, ``images/*.in``/``*.lock``,
``Dockerfile.*``) live at the top of the source tree; a built wheel carries a copy of them under
``runner/_builtin/``, where :func:`runner.host.project.builtin_dir` finds them at run time."""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
BUILTIN = ["conf", "images", "Dockerfile.cpu", "Dockerfile.cuda"]


class BuildWithBuiltins(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:  # an editable install reads them from the source tree
            return
        target = Path(self.build_lib) / "runner" / "_builtin"
        shutil.rmtree(target, ignore_errors=True)
        for name in BUILTIN:
            src = HERE / name
            if src.is_dir():
                shutil.copytree(src, target / name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, target / name)


setup(cmdclass={"build_py": BuildWithBuiltins})
