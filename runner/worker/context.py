"""What a training process sees about itself, read in one place: paths, rank, world, seed,
determinism profile — and the Lightning pieces the runner contributes (strategy, fingerprints).

The host writes ``job.json`` into the run dir; the worker points ``RUNNER_JOB`` at it and sets
the usual ``RANK``/``LOCAL_RANK``/``WORLD_SIZE`` for each DDP process. Experiments call
:func:`current` (or receive the run dir and call it) instead of reading the environment.
Standard library only at module level: this runs inside the image.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.core import audit_rules, layout, op_traces, worker_io
from runner.core.deprecation import REMOVED_IN, moved
from runner.core.worker_io import Json, WorkerRequest

if TYPE_CHECKING:
    from pytorch_lightning import Callback


@dataclass(frozen=True)
class RunContext:
    run_dir: Path
    code_dir: Path
    data_dir: Path
    request: WorkerRequest  # job.json, as the host wrote it
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @classmethod
    def current(cls) -> RunContext:
        """This process's context: ``job.json`` (named by ``RUNNER_JOB``) and the rank variables.
        Raises :class:`runner.core.worker_io.ContractError` for a job file of another shape."""
        path = os.environ.get("RUNNER_JOB")
        if not path:
            raise RuntimeError("RUNNER_JOB is not set: this code runs under `python -m runner.worker`")
        request = worker_io.read(Path(path), WorkerRequest.from_json)
        run_dir = Path(request.paths.run_dir)
        return cls(
            run_dir=run_dir,
            code_dir=Path(request.paths.code_dir),
            data_dir=Path(request.paths.data_dir),
            request=request,
            rank=int(os.environ.get("RANK", 0)),
            local_rank=int(os.environ.get("LOCAL_RANK", 0)),
            world_size=int(os.environ.get("WORLD_SIZE", request.world_size)),
        )

    @property
    def job(self) -> dict[str, Json]:
        """Deprecated: ``job.json`` as a plain dict. Read :attr:`request` (typed) instead."""
        warnings.warn(
            f"RunContext.job is deprecated and goes away in runner {REMOVED_IN}: use RunContext.request "
            "(a runner.core.worker_io.WorkerRequest)",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.request.to_json()

    # -- plain facts -----------------------------------------------------------------------------
    @property
    def output_dir(self) -> Path:
        return self.run_dir / layout.OUTPUTS_DIR

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / layout.CHECKPOINT_DIR

    @property
    def resume_checkpoint(self) -> str | None:
        """The checkpoint a resumed run continues from (``Trainer.fit(..., ckpt_path=...)``), else None."""
        return None if self.auditing else self.request.resume or None

    @property
    def auditing(self) -> bool:
        """True when this run is the determinism audit alone (``runner audit``): its processes end
        after the audit, before training (:mod:`runner.worker.audit_step`)."""
        return self._audit == "only"

    @property
    def _audit(self) -> str:
        """``on``, ``only`` or ``off``: whether the training processes audit their first step."""
        from runner.worker.audit_gate import wanted

        return wanted(self.request)

    @property
    def nodes(self) -> int:
        """Nodes the run spans."""
        return self.request.nodes

    @property
    def node_rank(self) -> int:
        return int(os.environ.get("NODE_RANK", 0))

    @property
    def seed(self) -> int:
        return self.request.seed

    @property
    def accelerator(self) -> str:
        return self.request.accelerator

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def determinism(self) -> Mapping[str, Json]:
        """The determinism profile the run was planned with."""
        return self.request.determinism

    @property
    def precision(self) -> Mapping[str, Json] | None:
        """The precision section (``conf/precision``); None for a job recorded before that group."""
        return self.request.precision

    @property
    def data_files(self) -> dict[str, Path]:
        return {k: self.data_dir / v for k, v in self.request.dataset_files.items()}

    # -- Lightning -------------------------------------------------------------------------------
    def trainer_kwargs(
        self, trainer_cfg: Mapping[str, Any] | None = None, samplers: list | tuple = ()
    ) -> dict[str, Any]:
        """Keyword arguments for ``Trainer``: the user's ``trainer`` config plus what the runner owns
        (devices and strategy, determinism, precision, fingerprints, checkpoints, where logs go).

        With ``launch.checkpoint_every_n_steps`` > 0 a checkpoint (weights, optimizer, loops, every
        rank's RNG states, the epoch position) is written every N steps. ``samplers`` are told
        where a resumed epoch continues (``resume_at(epoch, batches_done)``); pass the ones whose
        order you control, or a resume mid-epoch starts the epoch over."""
        from pytorch_lightning.loggers import CSVLogger
        from pytorch_lightning.plugins.environments import LightningEnvironment

        from runner.worker.precision_probe import PrecisionProbe

        # Lightning 2.6 on torch >= 2.13 warns about its own pytree use at every fit, once per rank:
        # nothing a user can act on, and it buried the run's own output
        warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
        kw = dict(trainer_cfg or {})
        callbacks = list(kw.pop("callbacks", None) or [])
        every = 0 if self.auditing else self.request.checkpoint_every
        callbacks += self._watching(kw)
        callbacks.append(PrecisionProbe())
        if self.precision is not None:  # the precision group owns Lightning's precision setting
            kw["precision"] = self.precision["lightning"]
        if every > 0:
            callbacks = self._checkpointing(callbacks, every, samplers)
        strategy, sync = self._strategy()
        kw.update(
            # the worker launched these processes: no SLURM/MPI/LSF auto-detection (probing MPI
            # initialises it, and a cluster's variables must not reshape the job)
            plugins=[*(kw.pop("plugins", None) or []), LightningEnvironment(), *self._checkpoint_io(every)],
            accelerator=self.accelerator,
            devices=self.world_size // self.nodes if self.world_size > 1 else 1,
            num_nodes=self.nodes,
            strategy=strategy,
            deterministic=self._deterministic(),
            callbacks=callbacks + sync,
            default_root_dir=str(self.run_dir),
            logger=CSVLogger(str(self.run_dir), name=layout.METRICS_DIR, version=""),
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=every > 0,
        )
        return kw

    @staticmethod
    def _checkpoint_io(every: int) -> list:
        """Checkpoints written whole or not at all (when the run checkpoints)."""
        if every <= 0:
            return []
        from runner.worker.checkpointing import AtomicCheckpointIO

        return [AtomicCheckpointIO()]

    def _checkpointing(self, callbacks: list[Callback], every: int, samplers: list | tuple) -> list[Callback]:
        """``callbacks`` with a checkpoint every ``every`` steps, and the RNG states restored on a
        resume before any other hook runs."""
        from runner.worker.checkpointing import callbacks as checkpoint_callbacks

        keep = self.request.keep_checkpoints
        resume_state, model_checkpoint = checkpoint_callbacks(self.checkpoint_dir, every, samplers, keep)
        if samplers:  # Lightning cannot see that the registered samplers resume mid-epoch
            warnings.filterwarnings(
                "ignore", message=".*resuming from a checkpoint that ended before the epoch"
            )
        return [resume_state, *callbacks, model_checkpoint]

    def _strategy(self) -> tuple[Any, list[Callback]]:
        """Lightning's strategy for this world, and the callback DDP needs: the worker signals every
        rank itself, so no rank relays SIGTERM to the others with a sync each step."""
        if self.world_size == 1:
            return "auto", []
        from pytorch_lightning.strategies import DDPStrategy

        from runner.worker.step_sync import LocalSigterm

        backend = "nccl" if self.accelerator == "gpu" else "gloo"
        return DDPStrategy(process_group_backend=backend), [LocalSigterm()]

    def _deterministic(self) -> bool | str:
        """Lightning's ``deterministic``: "warn" when the profile allows ops without a deterministic
        implementation (the audit found them and the record lists them), else the profile's switch."""
        on = bool(self.determinism.get("deterministic_algorithms"))
        return "warn" if on and self.determinism.get("allow_nondeterministic_ops") else on

    def _watching(self, kw: dict[str, Any]) -> list[Callback]:
        """The runner's own callbacks that watch training: the determinism audit first, when the
        profile asks for it (its twin step runs before any other callback sees the first batch),
        then fingerprints and the operation traces of ``fingerprints.trace_steps``; the audit
        alone, with no validation, when the run is the audit only."""
        watching: list[Callback] = []
        audit = self._audit
        if audit != "off":
            from runner.worker.audit_step import AuditStep

            out = self.run_dir / audit_rules.DIR / audit_rules.FILE
            check_data = self.resume_checkpoint is None  # a resumed sampler starts mid-epoch, once
            watching.append(AuditStep(out, self.code_dir, self.determinism, audit == "only", check_data))
        if audit == "only":
            kw.update(limit_val_batches=0, num_sanity_val_steps=0)
            return watching
        from runner.worker.fingerprint_callback import FingerprintWriter

        watching.append(
            FingerprintWriter(self.run_dir / layout.FINGERPRINTS, every_k=self.request.fingerprint_every)
        )
        steps = op_traces.trace_steps(self.request.config)
        if steps:
            from runner.worker.op_trace import OpTrace

            watching.append(OpTrace(self.run_dir, self.code_dir, steps))
        return watching

    def save_weights(self, module) -> Path | None:
        """Final weights as ``outputs/model.pt`` (rank 0). The file's hash is the run's headline result."""
        if not self.is_main:
            return None
        import torch

        self.output_dir.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
        path = self.output_dir / "model.pt"
        part = path.with_name(f".{path.name}.part")  # whole or not at all, as a checkpoint
        torch.save(state, part)
        os.replace(part, path)
        return path


def current() -> RunContext:
    return RunContext.current()


# moved to core (the host reads checkpoints too, and may not import the worker)
__getattr__ = moved(__name__, {"latest_checkpoint": "runner.core.layout.latest_checkpoint"})
