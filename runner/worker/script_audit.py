"""The determinism audit of a ``script`` or ``module`` experiment (torchrun included), in each of
its processes, while it runs.

The runner does not own a script's training loop, so it has no step to run twice. What it can do,
it does in every Python process the script starts: when the profile asks for the audit, the worker
puts :data:`BOOT_DIR` first on the script's ``PYTHONPATH``, and the ``sitecustomize`` there calls
:func:`install` before the script's first line (torchrun's ranks and
``torch.multiprocessing.spawn``'s children inherit the variable and run it too):

* Python's ``random`` is seeded with the run's seed; when the script imports torch (not before: a
  script may set variables torch reads at import), torch's generators are seeded, its deterministic
  algorithms switched on in warn-only mode and the profile's other switches and thread count set;
  numpy's global generator is seeded when numpy is imported. The script may set its own after.
* Each alert torch raises for an operation without a deterministic implementation is caught with
  the innermost frame of the user's code (:class:`runner.worker.frames.Callers`). An operation the
  profile allows (``determinism.allow_nondeterministic_ops``) is recorded, once a line on stderr,
  and the script goes on; any other stops the process at once: one line, exit status 3.

Each process keeps what it met in ``audit/script/<host>-<pid>.json`` (an :class:`AuditFindings`,
rewritten when a call site is new or its count doubles, and at a normal exit with the determinism
switches then in force); the worker judges them together once the script has ended
(:func:`verdict`). Standard library only at module level.
"""

from __future__ import annotations

import atexit
import importlib.abc
import importlib.machinery
import importlib.util
import os
import random
import re
import socket
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from runner.core import audit_rules as rules
from runner.core import worker_io
from runner.core.worker_io import AuditFindings, AuditVerdict, Json, NondeterministicOp, WorkerRequest

BOOT_DIR = Path(__file__).resolve().parent / "script_boot"  # holds the sitecustomize the worker puts first


def watched(request: WorkerRequest) -> bool:
    """Whether this job is a program whose processes the audit watches (its profile asks for the audit)."""
    return request.experiment.program and rules.mode(request.determinism) != "off"


def pythonpath(request: WorkerRequest, code_dir: Path, inherited: str) -> str:
    """The program's ``PYTHONPATH``: the audit's ``sitecustomize`` first when it is watched (before
    the project's own, which it runs after itself), then the code snapshot, then what was there."""
    first = [str(BOOT_DIR)] if watched(request) else []
    rest = [p for p in inherited.split(os.pathsep) if p and p not in (str(code_dir), str(BOOT_DIR))]
    return os.pathsep.join([*first, str(code_dir), *rest])


class Watch:
    """This process's alerts: each operation without a deterministic implementation torch warned
    about, by the user-code line that called it; allowed ones recorded, any other ends the process."""

    def __init__(self, out_dir: Path, code_dir: Path, profile: Mapping[str, Json], device: str = "cpu"):
        from runner.worker.frames import Callers

        self.out_dir, self.profile, self.device = out_dir, profile, device
        self.allow = tuple(str(a) for a in profile.get("allow_nondeterministic_ops") or [])  # type: ignore[union-attr]
        self.callers = Callers(code_dir)
        self.pid = os.getpid()
        self.calls: dict[tuple[str, str | None], int] = {}

    def alert(self, message: str) -> bool:
        """Take one warning; False when it is not torch's alert (it is shown as usual)."""
        op = rules.alert_op(message)
        if op is None:
            return False
        if os.getpid() != self.pid:  # a forked child (a DataLoader worker): its own record
            self.pid, self.calls = os.getpid(), {}
        key = (op, self.callers.here())
        n = self.calls[key] = self.calls.get(key, 0) + 1
        if n & (n - 1) == 0:  # the first call, then each doubling: a record at most log2(calls) writes
            self.save()
        if n == 1:
            self.first_call(NondeterministicOp(op=op, where=key[1]))
        return True

    def first_call(self, found: NondeterministicOp) -> None:
        if rules.allowed(found.op, self.allow):
            print(
                f"runner.worker: determinism audit: {found.op} has no deterministic implementation "
                f"({found.where or 'no user frame'}): allowed by determinism.allow_nondeterministic_ops, "
                "recorded",
                file=sys.stderr,
                flush=True,
            )
            return
        print(f"runner.worker: {rules.refusal([found])}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(rules.EXIT_REFUSED)  # mid-step, in whatever the script holds: no clean-up to run

    def findings(self, flags: Mapping[str, Json] | None = None) -> AuditFindings:
        ops = tuple(
            NondeterministicOp(op=op, where=w, calls=n) for (op, w), n in sorted(self.calls.items(), key=str)
        )
        return AuditFindings(
            ops_seen=0,
            nondeterministic_ops=ops,
            switched=tuple(rules.switched(self.profile, flags)) if flags else (),
            flags_after_step=dict(flags or {}),
            device=self.device,
            rank=int(os.environ.get("RANK", 0)),
            scope="script",
        )

    def save(self, flags: Mapping[str, Json] | None = None) -> None:
        """This process's record, replaced whole (a reader sees the last one written)."""
        save_whole(self.out_dir / f"{socket.gethostname()}-{self.pid}.json", self.findings(flags))

    def at_exit(self) -> None:
        """At a normal exit: the record with the switches in force (a script may have turned them)."""
        if os.getpid() != self.pid or "torch" not in sys.modules:
            return
        from runner.worker.determinism import flags_in_force

        self.save(flags_in_force())


def save_whole(path: Path, doc: AuditFindings | AuditVerdict) -> None:
    """A process's record in ``path``, written whole or not at all (a process killed meanwhile
    leaves the one before, or none): :func:`verdict` reads every ``*.json`` there."""
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_suffix(".part")
    worker_io.write(part, doc)
    os.replace(part, path)


def install() -> None:
    """Watch this process of a program (called by ``sitecustomize``): seeds and switches as torch
    and numpy are imported, torch's alerts caught (see the module's docstring)."""
    from runner.worker.context import RunContext

    ctx = RunContext.current()
    if not watched(ctx.request):
        return
    watch = Watch(ctx.run_dir / rules.DIR / rules.SCRIPT_DIR, ctx.code_dir, ctx.determinism, ctx.accelerator)
    random.seed(ctx.seed)
    after_import("numpy", lambda np: np.random.seed(ctx.seed))
    after_import("torch", lambda torch: _torch_ready(torch, ctx.determinism, ctx.seed))
    catch_alerts(watch)
    atexit.register(watch.at_exit)


def _torch_ready(torch: Any, profile: Mapping[str, Json], seed: int) -> None:
    set_switches(profile)
    torch.manual_seed(seed)


def set_switches(profile: Mapping[str, Json]) -> None:
    """The profile's switches in a process of a program, deterministic algorithms in warn-only mode:
    set as ``torch.use_deterministic_algorithms`` sets them, but inductor's share once inductor is
    imported (that function imports it: a second of CPU in every process, most of which never
    compile)."""
    import torch

    from runner.worker.determinism import switches

    switches({**profile, "deterministic_algorithms": None}, warn_only=True)
    if profile.get("deterministic_algorithms"):
        torch._C._set_deterministic_algorithms(True, warn_only=True)
        after_import("torch._inductor.config", _inductor_deterministic)


def _inductor_deterministic(config: Any) -> None:
    config.deterministic = True


def catch_alerts(watch: Watch) -> None:
    """Every alert torch raises reaches ``watch``, each call (not once per line, the default), ahead
    of ``showwarning`` and whatever replaced it; any other warning is shown as it would have been.
    A filter the script adds itself that ignores them hides them (``-W ignore``, ``simplefilter``)."""
    warnings.filterwarnings("always", message=".*" + re.escape(rules.ALERT))
    show: Callable[[warnings.WarningMessage], None] = getattr(warnings, "_showwarnmsg")  # noqa: B009

    def showing(msg: warnings.WarningMessage) -> None:
        if not watch.alert(str(msg.message)):
            show(msg)

    setattr(warnings, "_showwarnmsg", showing)  # noqa: B010 - what warn() and torch's warnings call


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs ``then(module)`` right after module ``name`` is first imported (once)."""

    def __init__(self, name: str, then: Callable[[ModuleType], None]):
        self.name, self.then = name, then

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        run, then = spec.loader.exec_module, self.then

        def exec_module(module: ModuleType) -> None:
            run(module)
            then(module)

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def after_import(name: str, then: Callable[[ModuleType], None]) -> None:
    """``then(module)`` once ``name`` is imported: now, when it already is."""
    if name in sys.modules:
        then(sys.modules[name])
    else:
        sys.meta_path.insert(0, _AfterImport(name, then))


def chain(boot_dir: Path) -> None:
    """Run the ``sitecustomize`` that the audit's own hides (the project's, the image's Python's)."""
    own = os.path.realpath(boot_dir)
    paths = [p for p in sys.path if os.path.realpath(p or os.curdir) != own]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", paths)
    if spec is not None and spec.loader is not None:
        spec.loader.exec_module(importlib.util.module_from_spec(spec))


def verdict(run_dir: Path, profile: Mapping[str, Json], device: str = "cpu") -> AuditVerdict:
    """What the program's processes met (their alerts, and the twins of steps they named with
    :func:`runner.worker.script_twin.audited`), together, judged against the profile's allow-list;
    its time: the longest twin's. A record that does not read (damaged) is passed over."""
    calls: dict[tuple[str, str | None, bool], int] = {}
    switched: dict[str, Any] = {}
    merged: dict[str, Any] = {"ops_seen": 0, "twin": None, "flags_after_step": {}, "device": device}
    seconds: list[float] = []
    for path in sorted((run_dir / rules.DIR / rules.SCRIPT_DIR).glob("*.json")):
        try:
            part, took = worker_io.read(path, _part)
        except (OSError, ValueError):  # damaged (a ContractError is a ValueError): the others judged
            continue
        for o in part.nondeterministic_ops:
            calls[(o.op, o.where, o.in_backward)] = calls.get((o.op, o.where, o.in_backward), 0) + o.calls
        switched.update({s.switch: s for s in part.switched})
        merged["ops_seen"] += part.ops_seen
        merged["twin"] = merged["twin"] or part.twin
        merged["flags_after_step"] = merged["flags_after_step"] or part.flags_after_step
        seconds += [took] if took is not None else []
    ops = tuple(NondeterministicOp(op, w, bw, n) for (op, w, bw), n in sorted(calls.items(), key=str))
    findings = AuditFindings(
        nondeterministic_ops=ops, switched=tuple(switched.values()), scope="script", **merged
    )
    return rules.judge(findings, profile, max(seconds) if seconds else None)


def _part(data: object, where: str) -> tuple[AuditFindings, float | None]:
    """A process's record, and its twin's time (a twin's record is its verdict)."""
    took = data.get("seconds") if isinstance(data, dict) else None
    return AuditFindings.from_json(data, where), float(took) if isinstance(took, int | float) else None
