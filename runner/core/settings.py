"""Every setting a replay runs with, held against the record. Pure.

A replay takes its environment variables from the record, and the runner adds its own (paths, the
safety switches, the determinism profile's variables as the recorded config gives them). Each one
is compared here with the value the manifest records, so a record edited to say
``PYTHONHASHSEED=1`` cannot replay with ``0`` from its profile without a word. After the replay
ran, the switches the training process read back from torch (determinism, precision) are compared
with the recorded ones the same way. Every mismatch is a :class:`~runner.core.compare.Drift`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from runner.core.compare import Drift, Verdict, flatten, same
from runner.core.manifest import REDACTED

# Variables whose value is a path of this run (its job file, its unpacked snapshot): they differ
# between any two runs on the host backend and say nothing about the environment.
RUN_PATHS = ("RUNNER_JOB", "PYTHONPATH")
# Read back from torch alongside the flags, but compared as variables (``env_drift``).
_FLAG_KEYS_SKIPPED = ("env",)
# The switches that decide the arithmetic: a replay trained under other values than the record's is
# not a replay, whatever its bits (host facts read back beside them, like thread counts, are not).
SWITCHES = (
    "deterministic_algorithms",
    "cudnn_deterministic",
    "cudnn_benchmark",
    "fill_uninitialized_memory",
    "matmul_allow_tf32",
    "cudnn_allow_tf32",
    "float32_matmul_precision",
    "lightning_precision",
    "autocast_dtype",
)


def env_drift(
    recorded: Mapping[str, str], planned: Mapping[str, str], ignore: Iterable[str] = RUN_PATHS
) -> list[Drift]:
    """Each variable the replay would set (``planned``) against the recorded one, both ways.

    ``planned`` is what the replay's plan gives the training process: the runner's own variables
    and the profile's, derived from the recorded config. A recorded secret (redacted) matches any
    value the replay sets for it; that the host sets one at all is checked where it is read."""
    skip = set(ignore)
    out = []
    for name in sorted((set(recorded) | set(planned)) - skip):
        rec, new = recorded.get(name), planned.get(name)
        if rec == REDACTED and new is not None:
            continue
        if rec is None:
            out.append(Drift(f"variable {name}", "not set", f"{new} (the replay would set it)"))
        elif new is None:
            out.append(Drift(f"variable {name}", rec, "not set by the replay"))
        elif rec != new:
            out.append(Drift(f"variable {name}", rec, f"{new} (what the replay would set)"))
    return out


def flag_drift(recorded: Mapping[str, Any] | None, replayed: Mapping[str, Any] | None) -> list[Drift]:
    """The determinism and precision switches the replay's training process read back from torch,
    against the recorded ones (nested groups compared key by key). Nothing recorded: nothing to hold
    the replay to; recorded but not read back (the replay failed early): one drift saying so."""
    if not recorded:
        return []
    if not replayed:
        return [Drift("flags read back from torch", "recorded", "not read back by the replay")]
    a = flatten({k: v for k, v in recorded.items() if k not in _FLAG_KEYS_SKIPPED})
    b = flatten({k: v for k, v in replayed.items() if k not in _FLAG_KEYS_SKIPPED})
    # a switch only one side read back (a record made before it was read) says nothing about it
    return [
        Drift(f"flag {k}", _text(a[k]), _text(b[k])) for k in sorted(set(a) & set(b)) if not same(a[k], b[k])
    ]


def hold_to_switches(verdict: Verdict, drift: list[Drift]) -> Verdict:
    """The verdict, failed when ``drift`` (from :func:`flag_drift`) names a :data:`SWITCHES` entry: equal
    bits under other arithmetic would be luck, not a replay."""
    switched = [d for d in drift if d.what.removeprefix("flag ").split(".")[0] in SWITCHES]
    if not switched:
        return verdict
    return dataclasses.replace(verdict, bit_identical=False, switches=[*verdict.switches, *switched])


def _text(v: Any) -> str:
    return str(v) if not isinstance(v, str) else v
