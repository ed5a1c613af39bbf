"""A run is prepared once, then executed (``runner.flows.run.prepare`` / ``execute``): a replay and a
resume hand in what they prepared, so the recorded snapshot is hashed once, the config planned once
and a resume's data had once. On the host backend (no engine), with the plain script experiment,
whose own processes start and end in seconds."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import pytest

from runner.core import spec
from runner.core.errors import RunnerError
from runner.core.run_input import RunInput
from runner.flows import replay, resume, run
from runner.flows.cli_common import compose, resolved
from runner.host import datasets, records, snapshot

HOST = ["experiment=plain_script", "launch.backend=host", "launch.processes=1"]
SHORT = "experiment.args=[--steps,3,--samples,512,--batch-size,32,--hidden,8]"


def _quiet(_line: str) -> None:
    pass


def _new_run(run_dir: Path, overrides: list[str]) -> None:
    cfg = resolved(compose(overrides))
    with contextlib.suppress(RunnerError):  # a failed run still has its whole record
        run.run(RunInput.new(cfg, ["test"], overrides), run_dir, echo=_quiet)


def _counting(monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> list[object]:
    """Calls of ``owner.name`` from now on; the real function still runs."""
    calls: list[object] = []
    real: Callable = getattr(owner, name)

    def counted(*args, **kwargs):
        calls.append(args[0] if args else None)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


def test_a_replay_hashes_its_snapshot_once_and_plans_once(tmp_path, monkeypatch):
    _new_run(tmp_path / "original", [*HOST, SHORT])
    assert records.read_manifest(tmp_path / "original").status == "completed"
    hashed = _counting(monkeypatch, snapshot, "verify")
    planned = _counting(monkeypatch, spec, "plan_run")
    outcome = replay.replay(tmp_path / "original", tmp_path / "again", echo=_quiet)
    assert outcome.verdict.bit_identical, outcome.verdict.headline()
    assert hashed == [tmp_path / "original" / "code.tar"]  # once, the original's: not the copy again
    assert len(planned) == 1
    m = records.read_manifest(tmp_path / "again")
    assert (tmp_path / "again" / "code.tar").read_bytes() == (tmp_path / "original" / "code.tar").read_bytes()
    assert m.code is not None and m.code.snapshot_sha256 == outcome.original.manifest.code.snapshot_sha256


def test_a_resume_hashes_plans_and_prepares_its_data_once(tmp_path, monkeypatch):
    failing = "experiment.args=[--no-such-flag]"  # the script refuses it: a failed run, resumable
    _new_run(tmp_path / "run", [*HOST, failing])
    prior = records.read_manifest(tmp_path / "run")
    assert prior.status == "failed" and prior.data is not None
    hashed = _counting(monkeypatch, snapshot, "verify")
    planned = _counting(monkeypatch, spec, "plan_run")
    data = _counting(monkeypatch, datasets, "prepare")
    with pytest.raises(RunnerError, match="run failed"):  # the same script, the same refusal
        resume.resume(tmp_path / "run", [f"+resume={tmp_path / 'run'}"], echo=_quiet)
    assert (len(hashed), len(planned), len(data)) == (1, 1, 1)
    again = records.read_manifest(tmp_path / "run")
    assert again.run_id == prior.run_id and len(again.resumes) == 1
    assert again.data == prior.data  # the data the resume checked is the data it recorded


def test_prepare_refuses_bad_input_before_the_run_dir_exists(tmp_path):
    cfg = resolved(compose([*HOST, "launch.nodes=0"]))
    with pytest.raises(RunnerError, match="launch.nodes=0 must be a positive integer"):
        run.prepare(RunInput.new(cfg, ["test"], []), tmp_path / "never")
    assert not (tmp_path / "never").exists()


def test_prepare_picks_no_engine_for_the_host_backend(tmp_path):
    cfg = resolved(compose([*HOST, SHORT]))
    ready = run.prepare(RunInput.new(cfg, ["test"], []), tmp_path / "r")
    assert ready.engine is None and not ready.plan.containerized
    assert ready.plan.run_dir == (tmp_path / "r").resolve() and not ready.plan.run_dir.exists()
