"""``python -m runner.replay RUN_DIR --locate``: the first operation whose output differs.

When two runs part at training step k, the step is run again with every operation's output hashed
(:mod:`runner.worker.op_trace`), for that step only, and the traces are compared op by op
(:func:`runner.core.op_traces.first_difference`): the answer is one operation, with the module it
ran in and the user-code line that called it.

* The original recorded traces (``fingerprints.trace_steps``, e.g. on another machine): one replay
  to the last traced step is compared with them.
* It recorded none: k is the step the latest replay of it diverged at (``replays/*/verdict.json``),
  or, when it has no such replay, the step a full replay made now diverges at; then two replays to
  step k, traced at k, are compared with each other — a cause that is not reproducible on this
  machine shows there.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.core import compare, json_types, layout, op_traces
from runner.core.digests import sha256_bytes
from runner.core.errors import EXIT_USAGE, RunnerError
from runner.host import records


class NothingToLocate(RunnerError):
    """A full replay agrees with the run at every recorded step: no divergence, exit status 0."""

    def __init__(self, message: str):
        super().__init__(message, 0)


@dataclass
class Located:
    step: int
    against: str  # what the trace was compared with
    difference: op_traces.OpDifference | None  # where the traces part; None: they agree
    runs: list[Path] = field(default_factory=list)  # the replays made for it

    def line(self) -> str:
        if self.difference is None:
            return f"step {self.step}: every operation's output agrees with {self.against}"
        line = self.difference["line"]
        return f"first diverging operation at step {self.step}: {line} (compared with {self.against})"


def _trace(run_dir: Path, step: int, sha256: str | None = None) -> list[op_traces.OpRow]:
    path = records.member(run_dir, op_traces.file_name(step), "op_traces")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RunnerError(f"cannot read the operation trace {path}: {exc.strerror}", EXIT_USAGE) from None
    if sha256 is not None and sha256_bytes(data) != sha256:
        raise RunnerError(f"{path} does not match the sha256 its manifest records", EXIT_USAGE)
    try:
        return op_traces.parse(data.decode())
    except ValueError as exc:
        raise RunnerError(f"{path} is not an operation trace: {exc}", EXIT_USAGE) from None


def _traced_to(steps: list[int]) -> Callable[[Mapping[str, Any]], Mapping[str, Any]]:
    """A config edit: train to the last of ``steps``, tracing each."""

    def edit(config: Mapping[str, Any]) -> Mapping[str, Any]:
        return {
            **config,
            "trainer": {**(config.get("trainer") or {}), "max_steps": max(steps)},
            "fingerprints": {**(config.get("fingerprints") or {}), "trace_steps": list(steps)},
        }

    return edit


def _divergence_step(original: records.RunRecord, rerun: Callable[[], Any], echo) -> int:
    """The step the latest replay of ``original`` diverged at; a full replay now when none did."""
    verdicts = sorted((original.dir / layout.REPLAYS_DIR).glob(f"*/{layout.VERDICT}"), key=os.path.getmtime)
    for path in reversed([p for p in verdicts if "-locate-" not in p.parent.name]):
        try:
            div = json_types.read(path, compare.VerdictFile.from_json).verdict.divergence
        except (OSError, json_types.ContractError):  # not a verdict this runner wrote: not a guide
            continue
        if div is not None and div.field != "steps":
            echo(f"the replay in {path.parent} diverged at step {div.step} ({div.field})")
            return div.step
    echo("no replay of this run diverged yet: replaying it in full to find the step")
    outcome = rerun()
    div = outcome.verdict.divergence
    if div is None or div.field == "steps":
        raise NothingToLocate(
            f"the replay in {outcome.run_dir} does not diverge at any recorded step: nothing to locate"
        )
    return div.step


# How a locate replays the run: (suffix of the replay's run dir, an edit of the recorded config)
# → the replay's outcome (its ``run_dir`` and ``verdict``). The replay flow passes one in, so this
# module never imports it (replay's command line imports this one).
Rerun = Callable[[str, Callable[[Mapping[str, Any]], Mapping[str, Any]] | None], Any]


def locate(original: records.RunRecord, rerun: Rerun, *, step: int | None = None, echo=print) -> Located:
    """Name the first operation whose output differs at the step ``original`` diverges at (or at
    ``step``), replaying it with ``rerun`` as often as that takes."""
    recorded: dict[int, str] = {}  # the traced step's number → its trace's sha256
    for name, rec in (original.manifest.op_traces or {}).items():
        traced = op_traces.step_of(name)
        if traced is not None and (step is None or traced == step):
            recorded[traced] = rec.sha256
    if recorded:
        steps = sorted(recorded)
        echo(f"tracing step(s) {', '.join(map(str, steps))} again, against the original's recorded traces")
        replayed = rerun("-locate-a", _traced_to(steps))
        for k in steps:
            diff = op_traces.first_difference(
                _trace(original.dir, k, recorded[k]), _trace(replayed.run_dir, k)
            )
            if diff is not None:
                return Located(k, "the original's recorded trace", diff, [replayed.run_dir])
        return Located(steps[0], "the original's recorded trace", None, [replayed.run_dir])
    k = step or _divergence_step(original, lambda: rerun("-locate-full", None), echo)
    if k < 1:
        raise RunnerError(
            "the runs differ before the first step (their initial weights): no step to trace", 1
        )
    echo(f"tracing step {k} in two replays")
    a, b = rerun("-locate-a", _traced_to([k])), rerun("-locate-b", _traced_to([k]))
    diff = op_traces.first_difference(_trace(a.run_dir, k), _trace(b.run_dir, k))
    return Located(k, "a second replay on this machine", diff, [a.run_dir, b.run_dir])


def recorded_differences(a: records.RunRecord, b: records.RunRecord) -> list[str]:
    """For each step both runs traced (``fingerprints.trace_steps``): the first operation whose
    output differs, in one line each; a trace that cannot be read is said so, not raised."""
    ta = {op_traces.step_of(n): r.sha256 for n, r in (a.manifest.op_traces or {}).items()}
    tb = {op_traces.step_of(n): r.sha256 for n, r in (b.manifest.op_traces or {}).items()}
    lines = []
    for k in sorted(k for k in set(ta) & set(tb) if k is not None):
        try:
            diff = op_traces.first_difference(_trace(a.dir, k, ta[k]), _trace(b.dir, k, tb[k]))
        except RunnerError as exc:
            lines.append(f"operation trace of step {k}: {exc.message}")
            continue
        lines.append(
            f"step {k}: "
            + (f"first diverging operation: {diff['line']}" if diff else "every operation's output agrees")
        )
    return lines
