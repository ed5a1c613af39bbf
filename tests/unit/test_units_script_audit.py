"""The determinism audit of scripts, in a process of its own each (torch's real alerts, no engine):
an alert is named as torch names it with the user's file:line, counted, and allowed by that name
or its ATen operation's; any other ends the process in one line with exit status 3; the seeds and
switches land when torch is imported, not before; the processes' records are judged together."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from runner.core import audit_rules, worker_io
from runner.core.worker_io import (
    AuditFindings,
    AuditVerdict,
    Experiment,
    NondeterministicOp,
    TwinDifference,
    WorkerPaths,
    WorkerRequest,
)
from runner.worker import script_audit
from tests.conftest import ROOT


@pytest.mark.parametrize(
    ("op", "allow", "ok"),
    [
        ("put_", ["put_"], True),
        ("put_", ["aten::put_"], True),
        ("put_", ["put"], False),  # an alert without a device suffix is named exactly
        ("index_add_cuda_", ["aten::index_add_"], True),
        ("index_add_cuda_", ["index_add"], True),
        ("scatter_add_cuda_kernel", ["aten::scatter_add_"], True),
        ("upsample_bilinear2d_backward_out_cuda", ["aten::upsample_bilinear2d_backward"], True),
        ("index_add_cuda_", ["index_copy_"], False),
        ("aten::index_add_", ["index_add"], False),  # the twin's ATen names keep their exact match
    ],
)
def test_an_alert_is_allowed_by_its_own_name_or_its_aten_operations(op, allow, ok):
    assert audit_rules.allowed(op, allow) is ok


def test_the_operation_is_read_from_torchs_alert_and_only_from_it():
    alert = (
        "put_ does not have a deterministic implementation, but you set "
        "'torch.use_deterministic_algorithms(True, warn_only=True)'. You can file an issue at …"
    )
    assert audit_rules.alert_op(alert) == "put_"
    assert audit_rules.alert_op("TypedStorage is deprecated") is None


WATCHED = """\
import sys
from pathlib import Path
from runner.worker.script_audit import Watch, after_import, catch_alerts

here = Path(sys.argv[1])
watch = Watch(here / "records", here, {{"allow_nondeterministic_ops": {allow}}})
after_import("torch", lambda torch: torch.use_deterministic_algorithms(True, warn_only=True))
catch_alerts(watch)
import torch
for _ in range(3):
    torch.zeros(4).put_(torch.tensor([0, 0]), torch.tensor([1.0, 2.0]))  # line 11
import warnings
warnings.warn("a warning of the script's own")
"""


def _run(tmp_path: Path, allow: list[str]) -> subprocess.CompletedProcess:
    (tmp_path / "user.py").write_text(WATCHED.format(allow=allow))
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, str(tmp_path / "user.py"), str(tmp_path)], capture_output=True, text=True, env=env
    )


def test_an_allowed_alert_is_recorded_with_the_users_line_and_counted(tmp_path):
    proc = _run(tmp_path, ["aten::put_"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("put_ has no deterministic implementation (user.py:11): allowed") == 1
    assert "a warning of the script's own" in proc.stderr  # other warnings are shown as ever
    (record,) = (tmp_path / "records").glob("*.json")
    found = AuditFindings.from_json(json.loads(record.read_text()))
    assert found.scope == "script"
    assert found.nondeterministic_ops == (NondeterministicOp("put_", "user.py:11", calls=2),)  # 1, then 2


def test_an_alert_not_allowed_ends_the_process_in_one_line_with_status_3(tmp_path):
    proc = _run(tmp_path, [])
    assert proc.returncode == audit_rules.EXIT_REFUSED and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("runner.worker: determinism audit: 1 operation(s) without a deterministic")
    assert "put_ (user.py:11)" in line and "allow_nondeterministic_ops=[put_]" in line
    assert "a warning of the script's own" not in proc.stderr  # it never got there


def test_the_processes_records_are_judged_together(tmp_path):
    out = tmp_path / audit_rules.DIR / audit_rules.SCRIPT_DIR
    out.mkdir(parents=True)
    for n, calls in enumerate((3, 4)):
        part = AuditFindings(
            ops_seen=0,
            nondeterministic_ops=(NondeterministicOp("put_", "t.py:3", calls=calls),),
            scope="script",
        )
        (out / f"h-{n}.json").write_text(json.dumps(part.to_json()))
    v = script_audit.verdict(tmp_path, {"allow_nondeterministic_ops": []})
    assert v.refused and v.refused_ops == ("put_",) and v.findings is not None
    assert v.findings.nondeterministic_ops == (NondeterministicOp("put_", "t.py:3", calls=7),)
    assert AuditVerdict.from_json(v.to_json()) == v
    assert not script_audit.verdict(tmp_path, {"allow_nondeterministic_ops": ["put_"]}).refused
    noise = TwinDifference("aten::randn", "t.py:9")
    twin = audit_rules.judge(AuditFindings(ops_seen=30, twin=noise, scope="script"), {}, seconds=0.25)
    (out / "h-1-twin1.json").write_text(json.dumps(twin.to_json()))
    v = script_audit.verdict(tmp_path, {"allow_nondeterministic_ops": ["put_"]})
    assert v.refused and v.refused_ops == ("aten::randn",) and v.seconds == 0.25
    assert v.findings is not None and v.findings.twin == noise and v.findings.ops_seen == 30
    (out / "h-1-twin1.json").unlink()
    assert script_audit.verdict(tmp_path / "none", {}).findings == AuditFindings(
        ops_seen=0, device="cpu", scope="script"
    )


def test_a_process_record_that_does_not_read_is_passed_over_not_a_traceback(tmp_path):
    """A process killed while it wrote (or a damaged file): the others are still judged."""
    out = tmp_path / audit_rules.DIR / audit_rules.SCRIPT_DIR
    out.mkdir(parents=True)
    part = AuditFindings(
        ops_seen=0, nondeterministic_ops=(NondeterministicOp("put_", "t.py:3"),), scope="script"
    )
    (out / "h-1.json").write_text(json.dumps(part.to_json()))
    (out / "h-2-twin1.json").write_text('{"refused": tr')
    (out / "h-3.json").write_text('{"ops_seen": "many"}')
    v = script_audit.verdict(tmp_path, {"allow_nondeterministic_ops": []})
    assert v.refused and v.refused_ops == ("put_",) and v.findings is not None
    assert v.findings.nondeterministic_ops == (NondeterministicOp("put_", "t.py:3"),)


def test_an_old_record_reads_as_a_steps_audit():
    assert AuditFindings.from_json({"ops_seen": 5}).scope == "step"


def test_the_hook_runs_after_the_import_and_the_import_is_not_moved_earlier():
    code = textwrap.dedent(
        """\
        import sys
        from runner.worker.script_audit import after_import
        seen = []
        after_import("json", lambda m: seen.append(("json", hasattr(m, "dumps"))))
        assert "csv" not in sys.modules
        after_import("csv", lambda m: seen.append(("csv", hasattr(m, "reader"))))
        assert "csv" not in sys.modules and seen == [("json", True)]
        import csv
        print(seen)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[('json', True), ('csv', True)]"


def test_a_scripts_processes_get_deterministic_algorithms_without_importing_inductor_for_it():
    """torch.use_deterministic_algorithms imports inductor's config (a second of CPU in every
    process of a script): the switch is set without it, and inductor's share once it is imported."""
    code = textwrap.dedent(
        """\
        import sys, torch
        from runner.worker.script_audit import set_switches
        set_switches({"deterministic_algorithms": True, "cudnn_benchmark": False})
        assert "torch._inductor.config" not in sys.modules
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
        import torch._inductor.config as inductor
        print(inductor.deterministic)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"


def test_an_alert_raised_in_backward_is_named_at_the_line_that_called_backward(tmp_path):
    (tmp_path / "user.py").write_text(
        textwrap.dedent(
            """\
            import sys
            from pathlib import Path
            from runner.worker.script_audit import Watch, catch_alerts, set_switches
            here = Path(sys.argv[1])
            watch = Watch(here / "records", here, {"allow_nondeterministic_ops": ["put_"]})
            catch_alerts(watch)
            import torch
            set_switches({"deterministic_algorithms": True})
            x = torch.zeros(4, requires_grad=True)
            y = x.clone().put_(torch.tensor([0, 1]), torch.ones(2, requires_grad=True))  # line 10
            loss = y.pow(2).sum()
            loss.backward()  # line 12: put_'s backward puts too
            print(sorted(watch.calls))
            """
        )
    )
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, str(tmp_path / "user.py"), str(tmp_path)], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[('put_', 'user.py:10'), ('put_', 'user.py:12')]"


def test_the_sitecustomize_watches_a_process_of_a_strict_script_and_runs_the_projects_own(tmp_path):
    """What the worker sets up for a program, without an engine: the audit's sitecustomize first on
    PYTHONPATH, a job file naming a strict script; the project's own sitecustomize still runs."""
    strict = {"name": "strict", "audit": True, "deterministic_algorithms": True}
    request = WorkerRequest(
        run_id="r-1",
        paths=WorkerPaths(str(tmp_path), str(tmp_path), "/data"),
        experiment=Experiment("script", "user.py"),
        config={},
        seed=7,
        world_size=1,
        accelerator="cpu",
        determinism={**strict, "allow_nondeterministic_ops": ["put_"]},
        precision=None,
        dataset_files={},
        fingerprint_every=1,
    )
    worker_io.write(tmp_path / "job.json", request)
    (tmp_path / "sitecustomize.py").write_text("print('the project sitecustomize ran')\n")
    (tmp_path / "user.py").write_text(
        "import random, torch\n"
        "warn_only = torch.is_deterministic_algorithms_warn_only_enabled()\n"
        "print(random.random(), torch.rand(()).item(), warn_only)\n"
        "torch.zeros(4).put_(torch.tensor([0, 0]), torch.tensor([1.0, 2.0]))\n"  # line 4
    )
    path = script_audit.pythonpath(request, tmp_path, str(ROOT))
    assert path.split(":")[:2] == [str(script_audit.BOOT_DIR), str(tmp_path)]
    env = {"PYTHONPATH": path, "RUNNER_JOB": str(tmp_path / "job.json"), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "user.py"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    random.seed(7)
    torch_seeded = subprocess.run(
        [sys.executable, "-c", "import torch; torch.manual_seed(7); print(torch.rand(()).item())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert out.stdout.splitlines() == [
        "the project sitecustomize ran",
        f"{random.random()} {torch_seeded} True",
    ]
    v = script_audit.verdict(tmp_path, request.determinism)
    assert not v.refused and v.findings is not None
    assert v.findings.nondeterministic_ops == (NondeterministicOp("put_", "user.py:4", calls=1),)
    assert v.findings.flags_after_step["deterministic_algorithms"] is True  # written at its exit
