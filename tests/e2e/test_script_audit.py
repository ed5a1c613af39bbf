"""The determinism audit of scripts, against the real engine: a strict script's processes (torchrun's
ranks included) run with deterministic algorithms in warn-only mode and the run's seeds; an
operation without a deterministic implementation stops the run in one line naming its file:line
(exit status 3) unless allow-listed, and then the record says so; a clean script passes and repeats
bit-identically though it seeds nothing itself; a step the script names with ``runner.audited`` runs
twice first under DDP, naming clock-seeded noise, and leaving no trace in training; the fast
profile is untouched. The script: tests/data/script_audit/train.py."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import ROOT, manifest, run_runner

pytestmark = pytest.mark.docker

SCRIPT = "tests/data/script_audit/train.py"
LINES = (ROOT / SCRIPT).read_text().splitlines()
WHERE = f"{SCRIPT}:{next(n for n, text in enumerate(LINES, 1) if '.put_(' in text)}"
NOISE = f"{SCRIPT}:{next(n for n, text in enumerate(LINES, 1) if 'generator=noise' in text)}"
TORCHRUN = ["experiment.launcher=torchrun", "launch.processes=2"]
PROGRAM = ["experiment=plain_script", f"experiment.script={SCRIPT}"]


def _seeded_draws(seed: int) -> tuple[float, float]:
    import random

    torch.manual_seed(seed)
    random.seed(seed)
    return torch.rand(()).item(), random.random()


def test_a_torchrun_scripts_nondeterministic_op_stops_the_run_naming_its_line(tmp_path):
    proc = run_runner(
        *PROGRAM,
        "experiment.args=[--put]",
        *TORCHRUN,
        f"hydra.run.dir={tmp_path}",
    )
    assert proc.returncode == 3, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("runner: error: run failed: determinism audit: "), last
    assert f"put_ ({WHERE})" in last and "allow_nondeterministic_ops=[put_]" in last, last
    m = manifest(tmp_path)
    assert m["status"] == "failed" and m["exit_code"] == 3
    a = m["audit"]
    assert a["scope"] == "script" and a["refused"] and a["refused_ops"] == ["put_"]
    assert [o["where"] for o in a["nondeterministic_ops"]] == [WHERE]
    assert "model.pt" not in m["outputs"]  # stopped at its first step


def test_a_resumed_script_is_judged_on_what_this_attempt_met(tmp_path):
    """A script starts over on +resume: the alerts the attempt before recorded are not added in."""
    proc = run_runner(*PROGRAM, "experiment.args=[--put]", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 3, proc.stderr[-3000:]
    first = manifest(tmp_path)["audit"]
    proc = run_runner(f"+resume={tmp_path}")
    assert proc.returncode == 3, proc.stderr[-3000:]
    again = manifest(tmp_path)
    assert len(again["resumes"]) == 1, again["resumes"]
    assert again["audit"]["nondeterministic_ops"] == first["nondeterministic_ops"], (first, again["audit"])


def test_the_allow_list_lets_a_module_run_and_the_record_says_so(tmp_path):
    proc = run_runner(
        "experiment=plain_script",
        "experiment.script=null",
        "experiment.module=tests.data.script_audit.train",
        "experiment.args=[--put,--steps,3]",
        "determinism.allow_nondeterministic_ops=[aten::put_]",
        f"hydra.run.dir={tmp_path}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = manifest(tmp_path)
    a = m["audit"]
    assert a["scope"] == "script" and a["refused"] is False and a["allowed_ops"] == ["aten::put_"]
    assert a["nondeterministic_ops"] == [{"op": "put_", "where": WHERE, "in_backward": False, "calls": 3}]
    assert a["flags_after_step"]["deterministic_algorithms"] is True  # read at the script's exit
    flags = m["determinism"]["flags"]
    assert flags["deterministic_algorithms"] is True and flags["deterministic_warn_only"] is True
    assert m["metrics"]["deterministic"] == 1.0 and m["metrics"]["warn_only"] == 1.0  # what the script saw


def test_a_step_named_with_audited_runs_twice_and_its_clock_seeded_noise_is_refused(tmp_path):
    proc = run_runner(*PROGRAM, "experiment.args=[--twin,--clock]", *TORCHRUN, f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 3, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert f"the step run twice from the same state first differed at aten::randn ({NOISE})" in last, last
    m = manifest(tmp_path)
    assert m["exit_code"] == 3 and m["audit"]["refused_ops"] == ["aten::randn"]
    assert m["audit"]["twin"]["op"] == "aten::randn" and m["audit"]["twin"]["where"] == NOISE


def test_a_clean_script_passes_and_an_audited_steps_twin_leaves_no_trace_in_training(tmp_path):
    """Two torchrun runs, one naming its step for the twin: the same weights, which also shows the
    run's seeds reached every rank of a script that seeds nothing itself."""
    for name, args in (("twin", "[--twin]"), ("plain", "[]")):
        proc = run_runner(
            *PROGRAM, f"experiment.args={args}", *TORCHRUN, "seed=5", f"hydra.run.dir={tmp_path / name}"
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
    twin, plain = manifest(tmp_path / "twin"), manifest(tmp_path / "plain")
    assert plain["audit"]["refused"] is False and plain["audit"]["nondeterministic_ops"] == []
    assert twin["audit"]["refused"] is False and twin["audit"]["twin"] is None
    assert twin["audit"]["ops_seen"] > 0 and plain["audit"]["ops_seen"] == 0
    assert twin["timings"]["audit_seconds"] == twin["audit"]["seconds"] > 0
    assert twin["outputs"]["model.pt"] == plain["outputs"]["model.pt"]
    torch_draw, random_draw = _seeded_draws(5)
    assert plain["metrics"]["torch_draw"] == torch_draw and plain["metrics"]["random_draw"] == random_draw


def test_the_fast_profile_leaves_a_script_alone(tmp_path):
    proc = run_runner(*PROGRAM, "experiment.args=[--put]", "determinism=fast", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = manifest(tmp_path)
    assert m["audit"] is None and not (tmp_path / "audit").exists()
    assert m["metrics"]["deterministic"] == 0.0
    assert m["determinism"]["flags"]["deterministic_algorithms"] is False


def test_runner_audit_says_in_one_line_that_a_script_is_audited_while_it_runs():
    proc = run_runner(*PROGRAM, module="runner.audit")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    (line,) = proc.stderr.strip().splitlines()
    assert "a strict run watches its processes while it runs" in line, line
