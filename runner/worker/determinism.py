"""A determinism profile and a precision applied inside the training process: seeds and
PyTorch's switches, then what is actually in force, read back from torch.

The profile's environment variables (:func:`runner.core.determinism.environment`) are already
in place when this runs: they were set before the process started. Lightning's share of the
precision (autocast) is read back once training starts (:mod:`runner.worker.precision_probe`).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any

from runner.core.determinism import RECORDED_ENV
from runner.core.json_types import Json, JsonObject


def apply(profile: Mapping[str, Any], seed: int, precision: Mapping[str, Any] | None = None) -> JsonObject:
    """Seed everything and set PyTorch's switches in this process; return the flags in force.

    ``precision`` is the job's precision section; None for a record made before the precision
    group, whose profile may carry ``allow_tf32`` instead (applied as such records were run)."""
    import torch

    try:  # Lightning's seeding also exports PL_GLOBAL_SEED and seeds DataLoader workers
        from pytorch_lightning import seed_everything
    except ImportError:  # pragma: no cover - images always carry Lightning
        # the unified `lightning` package, where an image has it instead (not installed here to type-check)
        seed_everything = importlib.import_module("lightning.pytorch").seed_everything
    seed_everything(seed, workers=True, verbose=False)
    # ops the audit found and the profile allows would stop the run: they warn instead
    switches(profile, warn_only=bool(profile.get("allow_nondeterministic_ops")))
    if precision is not None:
        torch.set_float32_matmul_precision(str(precision["float32_matmul_precision"]))
        torch.backends.cudnn.allow_tf32 = bool(precision["cudnn_allow_tf32"])
    elif profile.get("allow_tf32") is not None:
        torch.backends.cuda.matmul.allow_tf32 = bool(profile["allow_tf32"])
        torch.backends.cudnn.allow_tf32 = bool(profile["allow_tf32"])
        torch.set_float32_matmul_precision("medium" if profile["allow_tf32"] else "highest")
    return flags_in_force()


def switches(profile: Mapping[str, Any], warn_only: bool) -> None:
    """The profile's determinism switches and thread count in this process (``warn_only``: an
    operation without a deterministic implementation warns instead of raising)."""
    import torch

    if profile.get("deterministic_algorithms"):
        torch.use_deterministic_algorithms(True, warn_only=warn_only)
    if profile.get("cudnn_deterministic") is not None:
        torch.backends.cudnn.deterministic = bool(profile["cudnn_deterministic"])
    if profile.get("cudnn_benchmark") is not None:
        torch.backends.cudnn.benchmark = bool(profile["cudnn_benchmark"])
    if profile.get("fill_uninitialized_memory") is not None:
        # a property torch adds to the module at import: its stubs do not declare it
        torch.utils.deterministic.fill_uninitialized_memory = bool(  # type: ignore[attr-defined]
            profile["fill_uninitialized_memory"]
        )
    threads = profile.get("threads")
    if threads:
        torch.set_num_threads(int(threads))


# What only the running Trainer can tell (Lightning's precision as training saw it, how SIGTERM is
# relayed), set by the runner's callbacks in the context that trains, read back by flags_in_force.
_IN_TRAINING: ContextVar[Mapping[str, Json] | None] = ContextVar("runner_in_training", default=None)


def flags_in_force() -> JsonObject:
    """What this process actually runs with: read back from torch, not from the profile."""
    import torch

    # a property torch adds to the module at import: its stubs do not declare it
    fill_uninitialized = torch.utils.deterministic.fill_uninitialized_memory  # type: ignore[attr-defined]
    return {
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "deterministic_warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "fill_uninitialized_memory": bool(fill_uninitialized),
        **(_IN_TRAINING.get() or {}),
        "num_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "env": {k: os.environ[k] for k in sorted(os.environ) if k in RECORDED_ENV},
    }


def record_in_training(**flags: Json) -> None:
    """Add what only the running Trainer can tell (see :mod:`runner.worker.precision_probe`)."""
    _IN_TRAINING.set({**(_IN_TRAINING.get() or {}), **flags})
