"""Per-operation output hashes for chosen training steps (``fingerprints.trace_steps``).

During a traced step a dispatch mode sees every ATen operation (forward, backward, optimizer
step) and hashes its output tensors; module forward hooks say which module each forward
operation ran in, and autograd's anomaly mode keeps each forward call's stack on its node, so a
backward operation names the frame that made it. Every other step runs untouched: the mode is
entered at the traced step's start and left at its end. Rank 0 writes the trace
(format: :mod:`runner.core.op_traces`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pytorch_lightning import Callback

from runner.core import op_traces
from runner.worker.frames import Callers, node_frames
from runner.worker.output_digest import Digests, tensor_sha256

__all__ = ["HostHashes", "OpTrace", "TraceMode", "outputs_sha256", "tensor_sha256", "tracing"]


def outputs_sha256(out) -> str | None:
    import torch
    from torch.utils._pytree import tree_leaves

    leaves = [tensor_sha256(x) for x in tree_leaves(out) if isinstance(x, torch.Tensor)]
    return (
        None
        if not leaves
        else leaves[0]
        if len(leaves) == 1
        else hashlib.sha256("|".join(leaves).encode()).hexdigest()
    )


# Operations whose output holds no computed value: fresh, uninitialised memory, or another tensor's
# storage re-pointed (``set_``). Their bytes differ between any two runs and say nothing about
# where training parted, so they are listed in the trace without a hash.
UNDEFINED_OUTPUT = frozenset(
    {
        "aten::empty",
        "aten::empty_like",
        "aten::empty_strided",
        "aten::new_empty",
        "aten::new_empty_strided",
        "aten::set_",
        "aten::resize_",
        "aten::resize_as_",
    }
)


class HostHashes:
    """Each operation's output hashed with sha256 on the host as it is made: what a trace records,
    comparable between machines. (The twin step compares on the machine itself, with
    :class:`runner.worker.output_digest.DeviceFingerprints`: the same two methods.)"""

    def of(self, out: Any) -> str | None:
        return outputs_sha256(out)

    def settle(self, digests: list[Any]) -> list[Any]:
        return digests


def _mode_base():
    from torch.utils._python_dispatch import TorchDispatchMode

    return TorchDispatchMode


class TraceMode(_mode_base()):  # type: ignore[misc]
    """Every operation's output digested (``digests``: :class:`HostHashes` unless given) into
    :attr:`rows`, with the module or the user-code frame it ran in. A digest that is read only after
    the step (a device fingerprint) is final once :meth:`settle` has run."""

    def __init__(self, code_dir: Path, modules: list[str], digests: Digests | None = None):
        super().__init__()
        self.code_dir, self.modules = code_dir, modules
        self.digests: Digests = digests if digests is not None else HostHashes()
        self.callers = Callers(code_dir)
        self.rows: list[dict[str, Any]] = []

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        import torch

        out = func(*args, **(kwargs or {}))
        if func.namespace == "profiler":  # Lightning's and the profiler's markers: no data
            return out
        node = torch._C._current_autograd_node()
        name = func._schema.name
        row: dict[str, Any] = {
            "i": len(self.rows),
            "op": name,
            "out": None if name in UNDEFINED_OUTPUT else self.digests.of(out),
        }
        if node is not None:
            row["node"] = node.name()
            row["where"] = self.callers.first(reversed(node_frames()))
        else:
            row["module"] = self.modules[-1] if self.modules else None
            row["where"] = self.callers.here()
        self.rows.append(row)
        return out

    def settle(self) -> list[dict[str, Any]]:
        """:attr:`rows`, each output's digest read (call it after leaving the mode)."""
        for row, out in zip(self.rows, self.digests.settle([r["out"] for r in self.rows]), strict=True):
            row["out"] = out
        return self.rows


@contextlib.contextmanager
def tracing(module: Any, code_dir: Path, digests: Digests | None = None) -> Iterator[TraceMode]:
    """Every operation run inside digested into the :class:`TraceMode` it yields (``digests``:
    sha256 on the host unless given), each forward one named by the module it ran in
    (``module``'s names), each backward one by its forward frame."""
    import warnings

    import torch

    names = {id(m): name or type(m).__name__ for name, m in module.named_modules()}
    stack: list[str] = []

    def enter(m, _inputs) -> None:
        stack.append(f"{names.get(id(m), type(m).__name__)} ({type(m).__name__})")

    def leave(m, _inputs, _output) -> None:  # returns None: the module's output stays its own
        if stack:
            stack.pop()

    hooks = [
        torch.nn.modules.module.register_module_forward_pre_hook(enter),
        torch.nn.modules.module.register_module_forward_hook(leave),
    ]
    try:
        warnings.filterwarnings("ignore", message="Anomaly Detection has been enabled")
        with torch.autograd.detect_anomaly(check_nan=False), TraceMode(code_dir, stack, digests) as mode:
            yield mode
    finally:
        for h in hooks:
            h.remove()


class OpTrace(Callback):
    def __init__(self, run_dir: Path, code_dir: Path, steps: list[int]):
        self.run_dir, self.code_dir, self.steps = run_dir, code_dir, set(steps)
        self._mode: TraceMode | None = None  # set during a traced step
        self._entered = contextlib.ExitStack()  # the hooks, anomaly mode and the trace mode

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if not trainer.is_global_zero or trainer.global_step + 1 not in self.steps:
            return
        self._mode = self._entered.enter_context(tracing(pl_module, self.code_dir))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._mode is None:
            return
        mode, self._mode = self._mode, None
        self._entered.close()
        path = self.run_dir / op_traces.file_name(trainer.global_step)
        path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in mode.settle()))
