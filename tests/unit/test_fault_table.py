"""The fault suite's table counts as lost only what a run should have kept, and says a failed test so."""

from __future__ import annotations

from tests.fault_table import FaultRow, _files_lost, markdown


def _ckpts(run_dir, *steps: int) -> set[str]:
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    names = {f"step-{s:08d}.ckpt" for s in steps}
    for name in names:
        (run_dir / "checkpoints" / name).write_bytes(b"whole")
    return names


def test_a_checkpoint_rotated_out_is_not_lost_one_of_the_newest_is(tmp_path):
    seen = _ckpts(tmp_path, 5, 10, 15)
    (tmp_path / "checkpoints" / "step-00000005.ckpt").unlink()  # rotated out: the newest 2 stay
    assert _files_lost(tmp_path, None, seen) == []
    (tmp_path / "checkpoints" / "step-00000010.ckpt").unlink()  # one of the newest 2: lost
    assert _files_lost(tmp_path, None, seen) == ["checkpoints/step-00000010.ckpt"]


def test_the_table_says_what_was_measured_and_a_failed_test_as_no():
    row = FaultRow("SIGTERM | to the runner", "t::a")
    row.run, row.reached, row.checkpoint = True, 13, 10
    row.checks, row.said = {"one line": True}, "exit 130 in one line"
    row.resumed(10, True)
    gone = FaultRow("a kill", "t::b", resumes=False)
    table = markdown([(row, True), (gone, False)]).splitlines()
    assert table[2] == (
        "| SIGTERM \\| to the runner | yes: exit 130 in one line | 3 steps (reached 13, checkpoint 10); "
        "files: none | yes (from step 10) |"
    )
    assert table[3] == (
        "| a kill | **no**: the test failed before the fault was looked at | steps n/a; files: none | n/a |"
    )
    row.identical = False
    failed = markdown([(row, False)]).splitlines()[2]
    assert "| **no** (the test failed): exit 130 in one line |" in failed, failed
    assert failed.endswith("| **no** (from step 10) |"), failed
