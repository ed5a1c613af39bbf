"""``runner.audited``: a script's own training step, run twice from one state by the determinism audit.

A script's training loop is its own, so the audit cannot find its step. A script that names it lets
the audit do there what it does for a target experiment's first step
(:mod:`runner.worker.audit_step`)::

    from runner import audited

    @audited(model, optimizer)    # under a profile with the audit: its first call runs twice first
    def train_step(x, y):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss

The first ``steps`` calls each run the step twice from the same state (the modules' parameters,
buffers and gradients, the optimizers' and ``schedulers``' state, every global RNG state), every
operation watched and its output hashed, then put everything back and make the call itself. A
``DistributedDataParallel`` model is stepped under ``no_sync`` in the twins (each rank checks its
own; no gradient all-reduce). The first operation whose output differed (a generator seeded from the
clock, an unseeded ``random``), or an operation without a deterministic implementation, is judged
against ``determinism.allow_nondeterministic_ops``: a refusal ends the process in one line, exit
status 3; the findings go beside the process's alerts (:mod:`runner.worker.script_audit`), into the
run's record. Outside a run the audit watches (no runner, the fast profile, ``determinism.audit=false``)
``audited`` returns the function itself.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from runner.core import audit_rules as rules
from runner.core.worker_io import AuditFindings

Step = TypeVar("Step", bound=Callable[..., Any])


def audited(*state: Any, schedulers: Iterable[Any] = (), steps: int = 1) -> Callable[[Step], Step]:
    """A decorator for a script's training step: ``state`` is what the step changes (its modules
    and optimizers), ``schedulers`` the learning-rate schedulers it steps, ``steps`` how many of its
    first calls are run twice. See the module's docstring."""
    if steps < 1:
        raise ValueError(f"runner.audited: steps must be at least 1, not {steps}")

    def wrap(step: Step) -> Step:
        twin = _Twin.for_this_run(state, tuple(schedulers), steps)
        if twin is None:
            return step

        @functools.wraps(step)
        def audited_step(*args: Any, **kwargs: Any) -> Any:
            twin.check(lambda: step(*args, **kwargs))
            return step(*args, **kwargs)

        return audited_step  # type: ignore[return-value]

    return wrap


class _Twin:
    """The twin of one audited step function in this process."""

    def __init__(self, ctx: Any, state: tuple[Any, ...], schedulers: tuple[Any, ...], steps: int):
        import torch

        self.ctx, self.schedulers, self.steps, self.calls = ctx, schedulers, steps, 0
        odd = [type(o).__name__ for o in state if not isinstance(o, torch.nn.Module | torch.optim.Optimizer)]
        if odd or not any(isinstance(o, torch.nn.Module) for o in state):
            raise TypeError(
                "runner.audited takes the step's modules and optimizers (at least one module)"
                + (f", not {', '.join(odd)}" if odd else "")
            )
        self.modules = [o for o in state if isinstance(o, torch.nn.Module)]
        self.optimizers = [o for o in state if isinstance(o, torch.optim.Optimizer)]

    @classmethod
    def for_this_run(cls, state: tuple[Any, ...], schedulers: tuple[Any, ...], steps: int) -> _Twin | None:
        """The twin, in a process of a program the audit watches; else None."""
        if not os.environ.get("RUNNER_JOB"):
            return None
        from runner.worker.context import RunContext
        from runner.worker.script_audit import watched

        ctx = RunContext.current()
        return cls(ctx, state, schedulers, steps) if watched(ctx.request) else None

    def check(self, step: Callable[[], object]) -> None:
        """The step run twice from one state, judged; recorded; the process ends if it is refused."""
        if self.calls >= self.steps:
            return
        self.calls += 1
        import torch

        from runner.worker.audit_step import TrainingState, twice
        from runner.worker.script_audit import save_whole

        module = self.modules[0] if len(self.modules) == 1 else torch.nn.ModuleList(self.modules)
        started = time.monotonic()
        with _outside_ddp(self.modules):
            watch, twin = twice(
                step, module, TrainingState(module, self.optimizers, self.schedulers), self.ctx.code_dir
            )
        findings = AuditFindings(
            ops_seen=watch.ops,
            nondeterministic_ops=watch.findings(),
            device=str(next(iter(module.parameters()), torch.empty(0)).device),
            twin=twin,
            rank=int(os.environ.get("RANK", 0)),
            scope="script",
        )
        verdict = rules.judge(findings, self.ctx.determinism, round(time.monotonic() - started, 3))
        out = self.ctx.run_dir / rules.DIR / rules.SCRIPT_DIR
        save_whole(out / f"{socket.gethostname()}-{os.getpid()}-twin{self.calls}.json", verdict)
        if verdict.refused:
            print(f"runner.worker: {verdict.message}", file=sys.stderr, flush=True)
            sys.stdout.flush()
            os._exit(rules.EXIT_REFUSED)


@contextlib.contextmanager
def _outside_ddp(modules: list[Any]) -> Iterator[None]:
    """DDP models stepped without gradient sync, and left as they were (a forward under ``no_sync``
    tells DDP not to sync buffers at the next one: that is put back too)."""
    from torch.nn.parallel import DistributedDataParallel

    ddps = [m for m in modules if isinstance(m, DistributedDataParallel)]
    before = [m.require_forward_param_sync for m in ddps]
    with contextlib.ExitStack() as stack:
        for m in ddps:
            stack.enter_context(m.no_sync())
        try:
            yield
        finally:
            for m, sync in zip(ddps, before, strict=True):
                m.require_forward_param_sync = sync
