"""``replay --locate`` for a run that recorded no operation traces: the step comes from the latest
replay that diverged, or from a full replay made now, and two traced replays of that step are
compared with each other. The replays are this test's own (the flow takes how to replay as an
argument); the record read and the traces compared are real files."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from runner.core import compare, layout, op_traces
from runner.core.errors import RunnerError
from runner.flows import locate
from runner.host import records
from tests.run_records import make_run

RANDN = {"i": 1, "op": "aten::randn", "module": "net.1 (Noise)", "where": "experiments/noisy.py:30"}


class Replays:
    """Replays of ``original`` into ``original/replays/<suffix>``: the full replay diverges at
    ``diverges_at`` (None: nowhere); each traced replay writes a trace of the steps it was asked to
    trace, whose ``aten::randn`` output differs from one replay to the next."""

    def __init__(self, original: Path, diverges_at: int | None):
        self.original, self.diverges_at, self.made = original, diverges_at, []

    def __call__(self, suffix: str, edit):
        run_dir = self.original / layout.REPLAYS_DIR / suffix
        run_dir.mkdir(parents=True)
        self.made.append(suffix)
        divergence = None
        if edit is None and self.diverges_at is not None:
            divergence = SimpleNamespace(step=self.diverges_at, field="params_sha256")
        if edit is not None:
            config = edit({"trainer": {"max_steps": 99}})
            assert config["trainer"]["max_steps"] == max(config["fingerprints"]["trace_steps"])
            for step in config["fingerprints"]["trace_steps"]:
                rows = [
                    {"i": 0, "op": "aten::mm", "out": "same"},
                    {**RANDN, "out": f"noise-{len(self.made)}"},
                ]
                (run_dir / op_traces.file_name(step)).write_text("\n".join(map(json.dumps, rows)) + "\n")
        return SimpleNamespace(run_dir=run_dir, verdict=SimpleNamespace(divergence=divergence))


def _original(tmp_path: Path) -> records.RunRecord:
    return records.load(make_run(tmp_path / "run"))


def test_without_traces_or_replays_a_full_replay_finds_the_step_then_two_traced_replays_the_op(tmp_path):
    original = _original(tmp_path)
    replays = Replays(original.dir, diverges_at=2)
    found = locate.locate(original, replays, echo=lambda _: None)
    assert replays.made == ["-locate-full", "-locate-a", "-locate-b"]
    assert found.step == 2 and found.against == "a second replay on this machine"
    assert found.difference is not None and found.difference["a"]["op"] == "aten::randn"
    assert found.runs == [original.dir / "replays" / "-locate-a", original.dir / "replays" / "-locate-b"]
    assert found.line().startswith("first diverging operation at step 2: #1 aten::randn in net.1 (Noise)")


def _verdict_file(original: Path, replay: Path, step: int) -> str:
    """``verdict.json`` as a replay that diverged at ``step`` writes it."""
    verdict = compare.Verdict(
        bit_identical=False,
        status="completed",
        outputs_compared=1,
        outputs=[],
        fingerprints_identical=False,
        divergence=compare.Divergence(step, "loss", 0.5, 0.25),
        metrics=[],
        environment=[],
        packages=[],
        drift=[],
    )
    return json.dumps(compare.VerdictFile(str(original), str(replay), "reused", None, verdict).to_json())


def test_the_step_comes_from_the_latest_replay_that_diverged(tmp_path):
    original = _original(tmp_path)
    for name, step in (("2026-01-01_00-00-00", 4), ("2026-01-02_00-00-00", 3), ("2026-01-03_00-00-00", 9)):
        replay = original.dir / layout.REPLAYS_DIR / name
        replay.mkdir(parents=True)
        text = _verdict_file(original.dir, replay, step)
        # the newest was cut off mid-write: not a verdict, so not a guide to the step
        (replay / layout.VERDICT).write_text(text if step != 9 else text[: len(text) // 2])
        time.sleep(0.01)  # the latest by modification time
    said: list[str] = []
    replays = Replays(original.dir, diverges_at=None)
    found = locate.locate(original, replays, echo=said.append)
    assert replays.made == ["-locate-a", "-locate-b"]  # no full replay: the recorded one named the step
    assert found.step == 3 and any("diverged at step 3 (loss)" in line for line in said)


def test_a_full_replay_that_does_not_diverge_leaves_nothing_to_locate(tmp_path):
    original = _original(tmp_path)
    with pytest.raises(RunnerError, match="does not diverge at any recorded step: nothing to locate"):
        locate.locate(original, Replays(original.dir, diverges_at=None), echo=lambda _: None)


def test_a_run_that_differs_before_its_first_step_has_no_step_to_trace(tmp_path):
    original = _original(tmp_path)
    with pytest.raises(RunnerError, match="differ before the first step"):
        locate.locate(original, Replays(original.dir, diverges_at=0), echo=lambda _: None)
