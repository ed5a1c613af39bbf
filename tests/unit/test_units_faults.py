"""How a run that died reads: the pure rules (the fault suite, tests/faults, runs the real thing)."""

from __future__ import annotations

from runner.core import record
from runner.core.errors import no_space


def test_a_running_record_reads_abandoned_once_its_runner_is_gone():
    assert record.status_read("running", runner_alive=True) == "running"
    assert record.status_read("running", runner_alive=False) == "abandoned"
    for ended in ("completed", "failed", "interrupted"):  # a finished record reads as it was written
        assert record.status_read(ended, runner_alive=False) == ended
        assert record.status_read(ended, runner_alive=True) == ended


def test_a_full_disk_is_one_line_naming_the_path_and_the_space_left():
    assert no_space("/runs/a/checkpoints/step-00000010.ckpt", 344064) == (
        "no space left on device writing /runs/a/checkpoints/step-00000010.ckpt (344,064 bytes free)"
    )
    assert no_space("/runs/a", None).endswith("(unknown free)")
