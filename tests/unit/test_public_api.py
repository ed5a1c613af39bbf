"""The runner's public interface for experiments, and the promise that a public name that moves
keeps working (with a DeprecationWarning naming its new place) for one release."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
import warnings

import pytest

import runner
from runner.core import layout
from runner.worker import context

# runner.job of late November (before runner/ was cut into layers): each name and where it lives now
OLD_JOB_NAMES = {
    "JobContext": context.RunContext,
    "current": context.current,
    "latest_checkpoint": layout.latest_checkpoint,
    "JOB_FILE": layout.WORKER_REQUEST,
    "RESULT_FILE": layout.RESULT,
    "FINGERPRINTS_FILE": layout.FINGERPRINTS,
    "OUTPUTS_DIR": layout.OUTPUTS_DIR,
    "CHECKPOINT_DIR": layout.CHECKPOINT_DIR,
    "CHECKPOINT_TEMPLATE": layout.CHECKPOINT_TEMPLATE,
}


def test_experiments_import_current_and_run_context_from_runner():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the public names warn about nothing
        from runner import RunContext, current

    assert RunContext is context.RunContext and current is context.current
    assert sorted(runner.__all__) == ["RunContext", "audited", "current"] and "current" in dir(runner)


def test_scripts_import_audited_from_runner_and_outside_a_run_it_changes_nothing(monkeypatch):
    from runner import audited
    from runner.worker import script_twin

    def step(x):
        return x + 1

    monkeypatch.delenv("RUNNER_JOB", raising=False)
    assert audited is script_twin.audited and audited(object())(step) is step


def test_an_unknown_name_of_runner_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'JobContext'"):
        runner.JobContext  # noqa: B018 - the old name lived in runner.job, never here


def test_import_runner_loads_neither_the_worker_nor_torch():
    """``import runner`` stays cheap on the host and in the image: nothing is loaded until asked."""
    probe = "import sys, runner; print(sorted(m for m in sys.modules if m.startswith(('runner.', 'torch'))))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("name", sorted(OLD_JOB_NAMES))
def test_each_old_runner_job_name_still_works_and_warns(name):
    with pytest.warns(DeprecationWarning, match=rf"runner\.job\.{name} is deprecated .*: use runner\."):
        value = getattr(importlib.import_module("runner.job"), name)
    assert value is OLD_JOB_NAMES[name]


def test_names_moved_out_of_the_worker_still_work_there_and_warn():
    with pytest.warns(DeprecationWarning, match="runner.worker.context.latest_checkpoint is deprecated"):
        from runner.worker.context import latest_checkpoint
    assert latest_checkpoint is layout.latest_checkpoint


def test_the_warning_points_at_the_line_that_imported_the_old_name():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from runner.job import JobContext  # noqa: F401
    assert [w.filename for w in caught if w.category is DeprecationWarning] == [__file__]


def test_runner_job_has_no_other_names():
    with pytest.raises(AttributeError, match="'runner.job' has no attribute 'Job'"):
        importlib.import_module("runner.job").Job  # noqa: B018


def test_importing_any_runner_module_runs_nothing():
    """No module starts a process (git, a container engine, …) when it is imported: each one is
    imported in a fresh interpreter in which starting a process raises."""
    names = [
        m.name
        for pkg in ("runner", "hydra_plugins")
        for m in pkgutil.walk_packages(importlib.import_module(pkg).__path__, pkg + ".")
    ]
    guard = (
        "import os, subprocess, sys\n"
        "def refuse(*a, **k): raise AssertionError('a process started at import time')\n"
        "subprocess.Popen.__init__ = refuse; os.system = refuse; os.posix_spawn = refuse; os.fork = refuse\n"
        "import importlib\n"
        "for name in sys.argv[1:]: importlib.import_module(name)\n"
    )
    proc = subprocess.run([sys.executable, "-c", guard, *names], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(names) > 80  # every module was imported, not an empty list
