"""Arithmetic precision, apart from determinism. Pure.

``precision`` (``conf/precision/*.yaml``) says how float32 work is done: in IEEE float32, with
TensorFloat-32 in matrix products and convolutions, or under bfloat16 autocast. It changes the
numbers a run computes, not whether a repeat computes the same ones, so it is a group of its own
and the determinism profile says nothing about it.

A record made before the group existed has no ``precision`` in its config; its determinism
profile carries ``allow_tf32`` and the worker applies that as it always did. :func:`resolve`
returns None for such a config, so its replay runs exactly as the record did.

What was in force is read back inside the training process (``determinism.flags``); a replay must
run under the same switches, and :func:`runner.core.settings.hold_to_switches` turns a difference into a
failed verdict.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from runner.core.errors import EXIT_USAGE, RunnerError
from runner.core.json_types import JsonObject

LIGHTNING = ("32-true", "bf16-mixed", "16-mixed")
MATMUL = ("highest", "high", "medium")

# Switches read back in training that decide the bits a step computes, whatever the host:
# a replay runs under the recorded value of each one the record has.


def resolve(cfg: Mapping[str, Any]) -> JsonObject | None:
    """The config's precision section, checked; None for a record made before the group existed.

    Refuses a config that sets precision twice: through ``determinism.allow_tf32`` or
    ``trainer.precision`` beside the ``precision`` group."""
    section = cfg.get("precision")
    if section is None:
        return None
    if not isinstance(section, Mapping):
        raise RunnerError(f"precision={section!r} must be a group: fp32, tf32 or bf16", EXIT_USAGE)
    out = dict(section)
    if (cfg.get("determinism") or {}).get("allow_tf32") is not None:
        raise RunnerError(
            "determinism.allow_tf32 is a precision setting: choose precision=fp32, tf32 or bf16 instead",
            EXIT_USAGE,
        )
    trainer_precision = (cfg.get("trainer") or {}).get("precision")
    if trainer_precision is not None and str(trainer_precision) != str(out.get("lightning")):
        raise RunnerError(
            f"trainer.precision={trainer_precision!r} conflicts with precision={out.get('name')!r}: "
            "choose precision=fp32, tf32 or bf16 and leave trainer.precision unset",
            EXIT_USAGE,
        )
    _check(out)
    return out


def _check(section: Mapping[str, Any]) -> None:
    if str(section.get("lightning")) not in LIGHTNING:
        raise RunnerError(
            f"precision.lightning={section.get('lightning')!r} is not one of {', '.join(LIGHTNING)}",
            EXIT_USAGE,
        )
    if section.get("float32_matmul_precision") not in MATMUL:
        raise RunnerError(
            f"precision.float32_matmul_precision={section.get('float32_matmul_precision')!r} is not "
            f"one of {', '.join(MATMUL)}",
            EXIT_USAGE,
        )
    if not isinstance(section.get("cudnn_allow_tf32"), bool):
        raise RunnerError(
            f"precision.cudnn_allow_tf32={section.get('cudnn_allow_tf32')!r} must be true or false",
            EXIT_USAGE,
        )
