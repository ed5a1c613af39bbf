"""The determinism audit, in the training process itself, before it trains.

:class:`AuditStep` is one more callback on the run's own Trainer (the same process, model, data and
step: nothing is imported or loaded twice). When training starts it draws the first batch twice,
from two fresh iterators of the training DataLoader with the same RNG states, and compares them.
At the first training batch, before Lightning runs the step, it runs that step itself twice from
the same state (weights, optimizer, every global RNG state: torch's CPU and CUDA generators,
Python's ``random``, numpy's; the same batch), with every ATen operation watched:

* each is run with PyTorch's deterministic algorithms switched on, so one that has no
  deterministic implementation raises, is recorded with the user-code frame that called it (for a
  backward operation, the frame of the forward call that made it, from autograd's anomaly mode)
  and runs again with the user's own setting;
* each output is fingerprinted where it is (:mod:`runner.worker.output_digest`: on the GPU, read
  back once per twin; sha256 on the CPU), and the first operation whose output differs between
  the two runs is named, with its module and frame: randomness the runner does not
  seed (a generator of the user's own seeded from the clock, an unseeded ``random``) shows there.

Then everything is put back as it was (generators found on the model included), the determinism
switches in force are read back and held to the profile, and the findings are judged
(:mod:`runner.worker.audit_gate`). Lightning then runs the first step as it would have without the
audit. A generator of the user's own is not rewound between the twins, so a draw from it is
named even when it is seeded from the run's seed (draw from torch's default generator, which the
runner seeds, or allow the operation).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable, Mapping
from itertools import chain
from pathlib import Path
from typing import Any

from runner.core import audit_rules as rules
from runner.core.worker_io import AuditFindings, Json, NondeterministicOp, TwinDifference
from runner.worker.frames import node_frames, stack_frames, user_frame

__all__ = ["AuditStep", "OpWatch", "node_frames", "stack_frames", "user_frame"]

_ALERT = "does not have a deterministic implementation"


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
    """The audit of this training process (see the module's docstring); ``only``: no training
    after it (``runner audit``), ``check_data``: draw the first batch twice."""

    def __init__(
        self,
        out: Path,
        code_dir: Path,
        profile: Mapping[str, Json],
        only: bool = False,
        check_data: bool = True,
    ):
        self.out, self.code_dir, self.profile, self.only = out, code_dir, profile, only
        self.check_data = check_data
        self.data: TwinDifference | None = None
        self.data_checked = False
        self.seconds = 0.0
        self._done = False

    def on_train_start(self, trainer, pl_module) -> None:
        if self.check_data:
            started = time.monotonic()
            self.data_checked, self.data = data_twin(trainer, self.code_dir)
            self.seconds += time.monotonic() - started

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        from runner.worker import audit_gate
        from runner.worker.determinism import flags_in_force

        if self._done:
            return
        self._done = True
        started = time.monotonic()
        watch, twin = step_twin(trainer, pl_module, batch, batch_idx, self.code_dir)
        flags = flags_in_force()
        findings = AuditFindings(
            ops_seen=watch.ops,
            nondeterministic_ops=watch.findings(),
            switched=tuple(rules.switched(self.profile, flags)),
            flags_after_step=flags,
            device=str(pl_module.device),
            twin=twin,
            data=self.data,
            data_checked=self.data_checked,
            rank=trainer.global_rank,
        )
        seconds = round(self.seconds + time.monotonic() - started, 3)
        code = audit_gate.settle(findings, self.profile, seconds, self.out, trainer.global_rank)
        if code or self.only:  # refused, or nothing to train: every rank ends here alike
            audit_gate.end_process(code)


def _no_log(*_args: Any, **_kwargs: Any) -> None:
    """``LightningModule.log`` during the twin steps: what they compute is not the run's."""


def _step(trainer, module, batch, batch_idx: int) -> None:
    """One training step as Lightning's automatic optimization runs it (forward under the precision
    plugin's context, backward, each optimizer's step), on the module itself: no DDP collective.
    A module with manual optimization steps its optimizers itself."""
    with trainer.precision_plugin.train_step_context():
        out = module.training_step(batch, batch_idx)
    if not module.automatic_optimization:
        return
    loss = out.get("loss") if isinstance(out, Mapping) else out
    if loss is not None:
        loss.backward()
    for opt in trainer.optimizers:
        opt.step()


def step_twin(
    trainer, module, batch, batch_idx: int, code_dir: Path
) -> tuple[OpWatch, TwinDifference | None]:
    """The step run twice from one state, watched; everything put back after. Returns the first
    run's watch (its operations without a deterministic implementation) and the first difference."""
    state = TrainingState.take(trainer, module)
    module.log, module.log_dict = _no_log, _no_log
    # manual_backward under DDP would ready the gradient all-reduce: the twin stays outside DDP, as
    # automatic optimization's does (and DDP's buckets are not laid out by a step that is not the run's)
    trainer.strategy.pre_backward = _no_log
    try:
        return twice(lambda: _step(trainer, module, batch, batch_idx), module, state, code_dir)
    finally:
        del module.log, module.log_dict, trainer.strategy.pre_backward


def twice(
    step: Callable[[], object], module, state: TrainingState, code_dir: Path
) -> tuple[OpWatch, TwinDifference | None]:
    """``step()`` run twice from ``state``, each operation watched and its output hashed (forward
    operations named by ``module``'s submodules), everything put back after: the first run's watch
    and the first operation whose output differed."""
    from runner.worker.op_trace import tracing
    from runner.worker.output_digest import DeviceFingerprints

    watches, rows = [], []
    try:
        for _ in range(2):
            watch = OpWatch(code_dir)
            with tracing(module, code_dir, DeviceFingerprints()) as trace, watch:
                step()
            watches.append(watch)
            rows.append(trace.settle())  # a device's fingerprints: one transfer per twin
            state.restore(rewind_own=False)
    finally:
        state.restore(rewind_own=True)
    return watches[0], first_difference(rows[0], rows[1])


def first_difference(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> TwinDifference | None:
    """The first operation of trace ``a`` whose output the same operation in trace ``b`` did not
    repeat; None when every operation both ran gave the same output. The traces are aligned by
    operation first: work only one of them did (a cache the first step filled, a lazily built
    layer) is not a difference, what it computed is compared where the other trace uses it."""
    from difflib import SequenceMatcher

    # a collective returns while its output is still being written (c10d's work runs on): the ops
    # that read what it reduced, once it is waited for, are compared instead
    a, b = ([r for r in rows if not r["op"].startswith("c10d::")] for rows in (a, b))
    match = SequenceMatcher(None, [r["op"] for r in a], [r["op"] for r in b], autojunk=False)
    for i, j, n in match.get_matching_blocks():
        for k in range(n):
            if a[i + k]["out"] != b[j + k]["out"]:
                return _difference(a[i + k], i + k)
    return None


def _difference(row: Mapping[str, Any], i: int) -> TwinDifference:
    backward = "node" in row
    return TwinDifference(
        op=row["op"],
        where=row.get("where"),
        module=row.get("node") if backward else row.get("module"),
        in_backward=backward,
        index=i,
    )


class TrainingState:
    """What a training step changes, copied: parameters, buffers and gradients, each optimizer's
    and learning-rate scheduler's state (manual optimization steps schedulers in the step), every
    global RNG state; and the generators of the user's own found on the model."""

    def __init__(self, module, optimizers: Iterable[Any], schedulers: Iterable[Any] = ()):
        import torch
        from lightning_fabric.utilities.seed import _collect_rng_states

        self.module, self.optimizers = module, list(optimizers)
        self.tensors = dict(chain(module.named_parameters(), module.named_buffers()))
        self.values = {k: t.detach().clone() for k, t in self.tensors.items()}
        self.grads: dict[str, Any] = {
            k: None if p.grad is None else p.grad.clone() for k, p in module.named_parameters()
        }
        self.opt_states = [copy.deepcopy(o.state_dict()) for o in self.optimizers]
        self.schedulers = list(schedulers)
        self.scheduler_states = [copy.deepcopy(s.state_dict()) for s in self.schedulers]
        self.rng = _collect_rng_states(include_cuda=torch.cuda.is_available())
        self.own = [(g, g.get_state()) for g in own_generators(module)]

    @classmethod
    def take(cls, trainer, module) -> TrainingState:
        """A Lightning module's state, with its trainer's optimizers and schedulers."""
        return cls(module, trainer.optimizers, [c.scheduler for c in trainer.lr_scheduler_configs])

    def restore(self, rewind_own: bool) -> None:
        """Everything back as it was taken; the user's own generators only when ``rewind_own``."""
        import torch
        from lightning_fabric.utilities.seed import _set_rng_states

        with torch.no_grad():
            for k, t in self.tensors.items():
                t.copy_(self.values[k])
        for k, p in self.module.named_parameters():
            p.grad = None if self.grads.get(k) is None else self.grads[k].clone()
        for o, saved in zip(self.optimizers, self.opt_states, strict=True):
            o.load_state_dict(copy.deepcopy(saved))
        for sched, saved in zip(self.schedulers, self.scheduler_states, strict=True):
            sched.load_state_dict(copy.deepcopy(saved))
        _set_rng_states(self.rng)
        if rewind_own:
            for g, s in self.own:
                g.set_state(s)


def own_generators(*objects: Any) -> list[Any]:
    """``torch.Generator`` objects held as attributes by ``objects`` or, for modules, their
    submodules (a layer's own noise source, say)."""
    import torch

    found: dict[int, Any] = {}
    for obj in objects:
        parts = obj.modules() if isinstance(obj, torch.nn.Module) else [obj]
        for part in parts:
            for v in vars(part).values():
                if isinstance(v, torch.Generator):
                    found[id(v)] = v
    return list(found.values())


def data_twin(trainer, code_dir: Path) -> tuple[bool, TwinDifference | None]:
    """The first batch of the training DataLoader drawn twice, from fresh iterators with the same
    RNG states (global, and the loader's and its sampler's generators); everything put back after.
    Returns whether the check ran (not for several loaders, persistent workers or a resumed run's
    sampler) and the difference, if any."""
    import torch
    from lightning_fabric.utilities.seed import _collect_rng_states, _set_rng_states
    from torch.utils.data import DataLoader

    loader = trainer.train_dataloader
    if not isinstance(loader, DataLoader) or loader.persistent_workers or trainer.ckpt_path:
        return False, None
    rng = _collect_rng_states(include_cuda=torch.cuda.is_available())
    own = [(g, g.get_state()) for g in own_generators(loader, loader.sampler, loader.batch_sampler or loader)]
    hashes = []
    try:
        for _ in range(2):
            _set_rng_states(rng)
            for g, s in own:
                g.set_state(s)
            hashes.append(batch_digest(next(iter(loader))))
    finally:
        _set_rng_states(rng)
        for g, s in own:
            g.set_state(s)
    return True, None if hashes[0] == hashes[1] else loader_difference(loader, code_dir)


def batch_digest(batch: Any) -> str:
    """What a batch holds: its tensors' fingerprints (:mod:`runner.worker.output_digest`: sha256
    on the CPU, computed on the device elsewhere) and any other leaf's repr."""
    import torch
    from torch.utils._pytree import tree_leaves

    from runner.worker.output_digest import DeviceFingerprints

    digests = DeviceFingerprints()
    leaves = tree_leaves(batch)
    settled = iter(digests.settle([digests.of(x) for x in leaves if isinstance(x, torch.Tensor)]))
    return "|".join(str(next(settled)) if isinstance(x, torch.Tensor) else repr(x) for x in leaves)


def loader_difference(loader, code_dir: Path) -> TwinDifference:
    """The data check's finding: where the loader's randomness may come from (its worker_init_fn,
    its dataset's ``__getitem__``), as user-code frames."""
    places = []
    for fn in (loader.worker_init_fn, getattr(type(loader.dataset), "__getitem__", None)):
        code = getattr(fn, "__code__", None)
        if code is not None:
            places.append(user_frame(code_dir, [(code.co_filename, code.co_firstlineno)]))
    where = ", ".join(p for p in places if p) or None
    dataset = type(loader.dataset).__name__
    return TwinDifference(
        op=rules.DATA_OP, where=where, module=f"{dataset}, {loader.num_workers} worker(s)", index=0
    )
