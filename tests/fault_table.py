"""The fault suite's table: what each fault test saw, one row a fault, as Markdown.

A fault test takes its row from the ``fault_row`` fixture (``tests/faults/conftest.py``), has it
watch the run dir while the run lasts (:meth:`FaultRow.watch`), and has it look at what the fault
left (:meth:`FaultRow.observe`) and at how the resume ended (:meth:`FaultRow.resumed`). Every
figure comes from the run dir and its record, none is written by hand:

* survived: the runner's error was one line, the record reads whole with the status (and reason)
  the fault calls for, no container of the run is left, and the test passed;
* steps lost: the step training had reached (the newest of the fingerprints and the checkpoints
  on disk, and the record's own count) less the newest checkpoint kept; none for a run that
  completed;
* files lost: a checkpoint seen whole while the run lasted that is gone though it is among the
  newest ``launch.keep_checkpoints`` (older ones are rotated out on purpose), or an output the
  record lists that is gone or holds other bytes;
* resume identical: ``+resume`` ended with the uninterrupted run's weights and fingerprints, bit
  for bit; n/a where no resume applies.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from runner.core import layout
from runner.core.errors import RunnerError
from runner.core.manifest import Manifest
from runner.host import records, rundir
from runner.host.engine import Engine
from runner.host.hashing import sha256_file
from tests.live_runs import containers_of, last_step

COLUMNS = ("fault", "survived", "what was lost (steps, files)", "resume identical")
LEGEND = (
    "Measured by `tests/faults` (`RUNNER_FAULT_TABLE=PATH` writes this table). Steps lost: the step "
    "training had reached (its fingerprints, checkpoints and record) less the newest checkpoint kept. "
    "Files lost: a checkpoint seen whole during the run and gone though among the newest "
    "`launch.keep_checkpoints`, or an output of the record gone or changed. Resume identical: "
    "`+resume=RUN_DIR` ended with the uninterrupted run's `model.pt` and `fingerprints.jsonl`, bit for bit."
)


class _Watch:
    """Every checkpoint name that appears in ``run_dir/checkpoints`` while the run lasts (written
    whole: temp file, then rename), polled in a thread of the test's own."""

    def __init__(self, run_dir: Path, every: float = 0.02) -> None:
        self.dir = run_dir / layout.CHECKPOINT_DIR
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, args=(every,), daemon=True)
        self._thread.start()

    def _poll(self, every: float) -> None:
        while True:
            self.seen |= set(_checkpoints(self.dir))
            if self._stop.wait(every):
                return

    def stop(self) -> set[str]:
        self._stop.set()
        self._thread.join()
        self.seen |= set(_checkpoints(self.dir))
        return self.seen


def _checkpoints(where: Path) -> list[str]:
    try:
        return sorted(p.name for p in where.glob("step-*.ckpt"))
    except OSError:  # being mounted over, or not there yet
        return []


def _record(run_dir: Path) -> Manifest | None:
    try:
        return records.read_manifest(run_dir)
    except RunnerError:
        return None


def _torn(run_dir: Path) -> bool:
    """A temporary manifest or a half-written checkpoint left behind."""
    return bool(
        list(run_dir.glob(".manifest.json.*")) or list((run_dir / layout.CHECKPOINT_DIR).glob(".*.part"))
    )


def _reached(run_dir: Path, record: Manifest | None, newest: int | None) -> int | None:
    """The step training had reached, as the run dir and its record show it; None: no step ran."""
    steps = [] if newest is None else [newest]
    if (run_dir / layout.FINGERPRINTS).is_file():
        steps.append(last_step(run_dir))
    if record is not None and record.fingerprints is not None:
        steps.append(record.fingerprints.steps)
    return max(steps) if steps else None


def _files_lost(run_dir: Path, record: Manifest | None, seen: set[str]) -> list[str]:
    on_disk = set(_checkpoints(run_dir / layout.CHECKPOINT_DIR))
    keep = int(record.config["launch"].get("keep_checkpoints", 2)) if record is not None else 2
    lost = [f"{layout.CHECKPOINT_DIR}/{n}" for n in sorted(seen | on_disk)[-keep:] if n not in on_disk]
    for name, kept in (record.outputs if record is not None else {}).items():
        path = run_dir / layout.OUTPUTS_DIR / name
        if not path.is_file() or sha256_file(path) != kept.sha256:
            lost.append(f"{layout.OUTPUTS_DIR}/{name}")
    return lost


@dataclass
class FaultRow:
    """One fault, as its test saw it. ``resumes``: whether the fault calls for a resume."""

    fault: str
    nodeid: str
    resumes: bool = True
    checks: dict[str, bool] = field(default_factory=dict)  # what "survived" means here, each as found
    said: str = ""  # how it ended, in a few words
    note: str = ""  # what else the test found, said after it
    run: bool = False  # a run dir was looked at (steps and files apply)
    completed: bool = False
    reached: int | None = None
    checkpoint: int | None = None  # the newest checkpoint kept
    files_lost: list[str] = field(default_factory=list)
    resumed_from: int | None = None
    identical: bool | None = None
    _watch: _Watch | None = None

    def watch(self, run_dir: Path) -> None:
        """Note every checkpoint written whole from now until :meth:`observe`."""
        self._watch = _Watch(run_dir)

    def stop_watching(self) -> set[str]:
        """The checkpoint names seen whole so far; the watch ends."""
        watch, self._watch = self._watch, None
        return watch.stop() if watch is not None else set()

    def observe(
        self,
        run_dir: Path,
        engine: Engine,
        status: str,
        *,
        code: int | None = None,
        stderr: str | None = None,
        reason: str | None = None,
    ) -> None:
        """What the fault left in ``run_dir``: ``status`` (and ``reason``, a part of the record's
        error) is what the record must read; ``code``/``stderr``: the runner's exit status and error
        output, where it lived to give them (one ``runner: error:`` line, none when it exits 0)."""
        seen = self.stop_watching()
        lines = [x for x in (stderr or "").splitlines() if x.startswith("runner: error:")]
        record = _record(run_dir)
        reads = rundir.run_status(run_dir, record.status) if record is not None else "unreadable"
        error = (record.error if record is not None else None) or ""
        self.checks = {
            "one line": stderr is None or len(lines) == (0 if code == 0 else 1),
            "record whole": record is not None and not _torn(run_dir),
            f"record {status}": reads == status and (reason is None or reason in error),
            "no container left": containers_of(engine, run_dir) == [],
        }
        ended = "killed" if code is None else f"exit {code}" + (" in one line" if len(lines) == 1 else "")
        said = f"{ended}, record `{reads}`" + (f" ({reason})" if reason and reason in error else "")
        self.said = said + (", no container left" if self.checks["no container left"] else "")
        newest = layout.latest_checkpoint(run_dir / layout.CHECKPOINT_DIR)
        self.run, self.completed = True, reads == "completed"
        self.checkpoint = newest[0] if newest else None
        self.reached = _reached(run_dir, record, self.checkpoint)
        self.files_lost = _files_lost(run_dir, record, seen)

    def observed(self, checks: dict[str, bool], said: str, files_lost: tuple[str, ...] = ()) -> None:
        """A fault without a run dir of its own (a record rewritten, an engine asked directly)."""
        self.checks, self.said, self.files_lost = checks, said, list(files_lost)

    def resumed(self, from_step: int, identical: bool) -> None:
        self.resumed_from, self.identical = from_step, identical

    def cells(self, passed: bool) -> tuple[str, str, str, str]:
        """The row's Markdown cells; ``passed``: whether its test passed."""
        return (self.fault, self._survived(passed), self._lost(), self._resume(passed))

    def _survived(self, passed: bool) -> str:
        if not self.checks:
            return "**no**: the test failed before the fault was looked at"
        failed = [name for name, ok in self.checks.items() if not ok] + ([] if passed else ["the test"])
        said = f"{self.said}; {self.note}" if self.note else self.said
        return f"**no** ({', '.join(failed)} failed): {said}" if failed else f"yes: {said}"

    def _lost(self) -> str:
        files = ", ".join(f"`{f}`" for f in self.files_lost) or "none"
        if not self.run:
            return f"steps n/a; files: {files}"
        if self.reached is None:
            steps = "no training step ran"
        elif self.completed:
            steps = f"0 steps (completed, step {self.reached})"
        else:
            kept = self.checkpoint or 0
            lost = self.reached - kept
            steps = (
                f"{lost} step{'' if lost == 1 else 's'} (reached {self.reached}, checkpoint {kept or 'none'})"
            )
        return f"{steps}; files: {files}"

    def _resume(self, passed: bool) -> str:
        if not self.resumes:
            return "n/a"
        if self.identical is None:
            return "**no**: not resumed" + ("" if passed else " (the test failed)")
        start = f"from step {self.resumed_from}" if self.resumed_from else "from the start"
        return f"yes ({start})" if self.identical else f"**no** ({start})"


def markdown(rows: list[tuple[FaultRow, bool]]) -> str:
    """The table of ``rows`` (each with whether its test passed), and what its figures mean."""

    def line(cells) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    table = [line(COLUMNS), line("---" for _ in COLUMNS), *(line(r.cells(ok)) for r, ok in rows)]
    return "\n".join(table) + "\n\n" + LEGEND + "\n"
