"""The determinism audit: one real training step (forward, backward, optimizer step on a real
batch) with every operation watched, before a strict run trains.

The worker starts the audit as a process of its own (:func:`runner.worker.audit_gate.run_before`): the
experiment runs unchanged, except that :class:`~runner.worker.context.RunContext` points it at ``<run
dir>/audit`` and limits its Trainer to one step with :class:`AuditStep` as its only runner callback.
During that step a dispatch mode sees every ATen operation; each is run with PyTorch's deterministic
algorithms switched on, so one that has no deterministic implementation raises, is recorded with the
user-code frame that called it (for a backward operation, the frame of the forward call that made
it, from autograd's anomaly mode) and runs again with the user's own setting. After the step the
determinism switches in force are read back and held to the profile. The findings go to
``audit/audit.json``; the run is stopped when an operation is not in the profile's allow-list. The
training run itself never runs under the mode: its overhead is the audit step's process only.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from runner.core import audit_rules as rules
from runner.core import worker_io
from runner.core.worker_io import AuditFindings, Json, NondeterministicOp

_ALERT = "does not have a deterministic implementation"
_FRAME = re.compile(r'File "([^"]+)", line (\d+)')


def user_frame(code_dir: Path, frames: list[tuple[str, int]]) -> str | None:
    """The innermost frame in the user's code (under ``code_dir``, outside the runner's own
    package) as ``path:line`` relative to the code dir; None when no frame is the user's."""
    root = str(code_dir.resolve()) + os.sep
    own = root + "runner" + os.sep
    for filename, line in reversed(frames):
        full = os.path.realpath(filename)
        if full.startswith(root) and not full.startswith(own):
            return f"{full[len(root) :]}:{line}"
    return None


def stack_frames() -> list[tuple[str, int]]:
    return [(f.filename, f.lineno or 0) for f in traceback.extract_stack()]


def node_frames() -> list[tuple[str, int]]:
    """In backward: the forward call stack anomaly mode kept on the autograd node being run."""
    import torch

    node = torch._C._current_autograd_node()
    # torch's stubs declare Node.metadata a method; it is a dict-valued property
    metadata: dict[str, Any] = node.metadata if node is not None else {}  # type: ignore[assignment]
    text = "".join(metadata.get("traceback_") or [])
    return [(f, int(n)) for f, n in _FRAME.findall(text)]


def _dispatch_mode_base():
    from torch.utils._python_dispatch import TorchDispatchMode

    return TorchDispatchMode


class OpWatch(_dispatch_mode_base()):  # type: ignore[misc]
    """Runs every operation with deterministic algorithms on; records those that have none."""

    def __init__(self, code_dir: Path):
        super().__init__()
        self.code_dir = code_dir
        self.ops = 0
        self.found: dict[tuple[str, str | None, bool], int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        import torch

        kwargs = kwargs or {}
        self.ops += 1
        users = (
            torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(),
        )
        torch.use_deterministic_algorithms(True)
        try:
            return func(*args, **kwargs)
        except RuntimeError as exc:
            if _ALERT not in str(exc):
                raise
        finally:
            torch.use_deterministic_algorithms(users[0], warn_only=users[1])
        backward = torch._C._current_autograd_node() is not None
        where = user_frame(self.code_dir, node_frames() if backward else stack_frames())
        key = (func._schema.name, where, backward)
        self.found[key] = self.found.get(key, 0) + 1
        torch.use_deterministic_algorithms(False)  # the user's own run would get this far: run it as it would
        try:
            return func(*args, **kwargs)
        finally:
            torch.use_deterministic_algorithms(users[0], warn_only=users[1])

    def findings(self) -> tuple[NondeterministicOp, ...]:
        return tuple(
            NondeterministicOp(op=op, where=where, in_backward=bw, calls=n)
            for (op, where, bw), n in sorted(self.found.items(), key=lambda kv: str(kv[0]))
        )


def _callback_base():
    from pytorch_lightning import Callback

    return Callback


class AuditStep(_callback_base()):  # type: ignore[misc]
    """Watches the first training step (forward, backward, optimizer step), then stops the Trainer
    and writes the findings and the switches in force to ``out``."""

    def __init__(self, out: Path, code_dir: Path, profile: Mapping[str, Json]):
        self.out, self.profile = out, profile
        self.watch = OpWatch(code_dir)
        self._entered = contextlib.ExitStack()  # anomaly mode, then the watch: left in reverse
        self._done = False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        import warnings

        import torch

        if self._done:
            return
        warnings.filterwarnings("ignore", message="Anomaly Detection has been enabled")  # asked for, one step
        # keeps each forward call's stack on its autograd node: backward findings name the forward frame
        self._entered.enter_context(torch.autograd.detect_anomaly(check_nan=False))
        self._entered.enter_context(self.watch)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._done:
            return
        self._done = True
        self._entered.close()
        from runner.worker.determinism import flags_in_force

        flags = flags_in_force()
        findings = AuditFindings(
            ops_seen=self.watch.ops,
            nondeterministic_ops=self.watch.findings(),
            switched=tuple(rules.switched(self.profile, flags)),
            flags_after_step=flags,
            device=str(pl_module.device),
        )
        worker_io.write(self.out, findings)
        # the audit's process has done its work: what the experiment does after training (evaluate,
        # save weights) is not audited, and would only cost the run time
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
