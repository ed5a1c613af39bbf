"""The run pipeline's ways out that a real engine cannot be made to take on demand: a bug (an
exception that is no RunnerError), a Ctrl-C before training, and an engine that goes away while
training runs (tests/faults stops a real, private dockerd for it). Each leaves a whole manifest with
the matching status, nothing of the run in the engine, and the run dir free. Driven by an
in-memory engine (this project's own protocol); the real-engine paths are in tests/e2e."""

from __future__ import annotations

import pytest

from runner.core import layout
from runner.core.errors import EXIT_ENGINE_LOST, EXIT_FAILED, EXIT_INTERRUPTED, EngineLost, RunnerError
from runner.core.run_input import RunInput
from runner.flows import run
from runner.flows.cli_common import compose, resolved
from runner.host import records
from tests.memory_engine import MemoryEngine

OVERRIDES = ["experiment=noisy", "launch.processes=1", "trainer.max_steps=2"]


def _input() -> RunInput:
    return RunInput.new(resolved(compose(OVERRIDES)), ["python", "-m", "runner", *OVERRIDES], OVERRIDES)


def _left(run_dir) -> records.RunRecord:
    """The record the run left, read as any reader would (schema-checked); its run dir is free."""
    assert not (run_dir / layout.CLAIM).exists()
    return records.load(run_dir)


def test_a_bug_while_starting_the_container_leaves_a_failed_record_and_nothing_in_the_engine(tmp_path):
    engine = MemoryEngine(fail={"start": ZeroDivisionError("engine bug")})
    with pytest.raises(ZeroDivisionError, match="engine bug"):  # the bug keeps its traceback
        run.run(_input(), tmp_path / "run", echo=lambda _: None, engine=engine)
    m = _left(tmp_path / "run").manifest
    assert m.status == "failed" and m.exit_code == EXIT_FAILED
    assert m.error == "internal error: ZeroDivisionError: engine bug"
    assert m.code is not None and m.image is not None  # what the run had got to is recorded
    assert engine.running == {} and engine.calls[-1] == "remove_named"  # created, never started: removed
    assert (tmp_path / "run" / layout.WORKER_REQUEST).is_file()


def test_an_os_error_that_is_no_full_disk_still_leaves_a_failed_record(tmp_path):
    """Only ENOSPC has a line of its own; any other OSError is a bug like the rest: its traceback
    kept, its record whole (not a provisional one that reads abandoned), the run dir free."""
    engine = MemoryEngine(fail={"start": PermissionError(13, "Permission denied", "/x")})
    with pytest.raises(PermissionError):
        run.run(_input(), tmp_path / "run", echo=lambda _: None, engine=engine)
    m = _left(tmp_path / "run").manifest
    assert m.status == "failed" and m.exit_code == EXIT_FAILED
    assert m.error == "internal error: PermissionError: [Errno 13] Permission denied: '/x'"
    assert engine.running == {}


def test_ctrl_c_before_training_records_an_interrupted_run(tmp_path):
    engine = MemoryEngine(fail={"image_id": KeyboardInterrupt()})
    with pytest.raises(RunnerError) as exc:
        run.run(_input(), tmp_path / "run", echo=lambda _: None, engine=engine)
    assert exc.value.exit_code == EXIT_INTERRUPTED
    assert exc.value.message == f"interrupted; partial record in {tmp_path / 'run' / layout.MANIFEST}"
    m = _left(tmp_path / "run").manifest
    assert m.status == "interrupted" and m.exit_code == EXIT_INTERRUPTED
    assert m.error == "interrupted before training"
    assert m.code is not None and m.data is not None and m.image is None  # stopped while the image was had
    assert "start" not in engine.calls and engine.running == {}


def test_a_run_dir_left_by_a_bug_is_never_overwritten(tmp_path):
    """The record of a failed run stays: the next run into the same dir is refused, in one line."""
    with pytest.raises(ZeroDivisionError):
        run.run(
            _input(),
            tmp_path / "run",
            echo=lambda _: None,
            engine=MemoryEngine(fail={"start": ZeroDivisionError()}),
        )
    before = (tmp_path / "run" / layout.MANIFEST).read_bytes()
    with pytest.raises(RunnerError, match="already holds a manifest: run dirs are never overwritten"):
        run.run(_input(), tmp_path / "run", echo=lambda _: None, engine=MemoryEngine())
    assert (tmp_path / "run" / layout.MANIFEST).read_bytes() == before


def test_an_engine_gone_mid_run_is_one_line_a_failed_record_and_a_run_to_resume(tmp_path):
    engine = MemoryEngine(
        fail={"wait": EngineLost("memory at mem://here", "it stopped answering (connection refused)")}
    )
    run_dir = tmp_path / "run"
    with pytest.raises(RunnerError) as exc:
        run.run(_input(), run_dir, echo=lambda _: None, engine=engine)
    line = (
        "engine lost: the container engine (memory at mem://here) went away at step 0: it stopped "
        f"answering (connection refused); once it is back, +resume={run_dir} continues it from the start "
        "(no checkpoint yet)"
    )
    assert exc.value.exit_code == EXIT_ENGINE_LOST == 5 and exc.value.message == f"run failed: {line}"
    m = _left(run_dir).manifest
    assert m.status == "failed" and m.exit_code == EXIT_ENGINE_LOST and m.error == line
    assert engine.calls[-1] == "stop_and_remove" and engine.running == {}  # asked, whatever the engine can
