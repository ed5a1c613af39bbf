"""Comparing two runs, pure: what differs between two manifests and where their training parted.

Everything here takes the records themselves (:class:`~runner.core.manifest.Manifest` objects,
fingerprint rows, package lists) and returns plain data, so the rules — which keys count, what
"bit-identical" means, how the first diverging step is found — are unit-tested without Docker,
and the CLIs (:mod:`runner.replay`, :mod:`runner.diff`) only load and print.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

from runner.core import numbers
from runner.core.fingerprints import Row
from runner.core.json_types import Fields, JsonObject
from runner.core.locks import freeze_versions
from runner.core.manifest import FileRecord, Manifest


class _Absent:
    """A key one side does not have (distinct from a recorded ``null``)."""

    def __repr__(self) -> str:
        return "<absent>"


ABSENT: Any = _Absent()


@dataclass(frozen=True)
class Change:
    """One key whose value differs between A and B (either side may be :data:`ABSENT`)."""

    key: str
    a: Any
    b: Any

    def to_json(self) -> JsonObject:
        return {
            "key": self.key,
            "a": _json_value(self.a),
            "b": _json_value(self.b),
            "only_in": _only_in(self.a, self.b),
        }

    @classmethod
    def from_json(cls, data: object, where: str = "change") -> Change:
        f = Fields.of(data, where)
        a, b = _sides(f)
        return cls(f.str_("key"), a, b)


@dataclass(frozen=True)
class Divergence:
    """The first training step at which two fingerprint records disagree, and on what."""

    step: int
    field: str  # params_sha256 | loss | steps
    a: Any
    b: Any

    def describe(self) -> str:
        if self.field == "steps":
            return f"step {self.step}: only {'A' if self.b is ABSENT else 'B'} has a record for it"
        note = numbers.hidden_difference(self.a, self.b, self.field)
        text = f"step {self.step}: {self.field} {_short(self.a)} vs {_short(self.b)}"
        return text + (f" ({note})" if note else "")

    def to_json(self) -> JsonObject:
        return {
            "step": self.step,
            "field": self.field,
            "a": _json_value(self.a),
            "b": _json_value(self.b),
            "only_in": _only_in(self.a, self.b),
        }

    @classmethod
    def from_json(cls, data: object, where: str = "divergence") -> Divergence:
        f = Fields.of(data, where)
        a, b = _sides(f)
        return cls(f.int_("step"), f.str_("field"), a, b)


@dataclass(frozen=True)
class Drift:
    """One way the environment a replay would use differs from the recorded one."""

    what: str
    recorded: str
    found: str

    def describe(self) -> str:
        return f"{self.what}: recorded {self.recorded}, here {self.found}"

    @classmethod
    def from_json(cls, data: object, where: str = "drift") -> Drift:
        f = Fields.of(data, where)
        return cls(f.str_("what"), f.str_("recorded"), f.str_("found"))


def _only_in(a: Any, b: Any) -> str | None:
    """Which side alone has the key, as a Change or Divergence records it (None: both do)."""
    return "b" if a is ABSENT else "a" if b is ABSENT else None


def _sides(f: Fields) -> tuple[Any, Any]:
    """``a`` and ``b`` as recorded, the side that lacked the key (``only_in``) :data:`ABSENT` again."""
    only_in = f.value("only_in", lambda v: v in (None, "a", "b"), '"a", "b" or null', None)
    return (
        ABSENT if only_in == "b" else f.data.get("a"),
        ABSENT if only_in == "a" else f.data.get("b"),
    )


# -- generic ----------------------------------------------------------------------------------------
def flatten(obj: object, prefix: str = "") -> dict[str, object]:
    """Nested mappings → ``{"a.b.c": leaf}``; lists and scalars are leaves. An empty mapping is a leaf."""
    if isinstance(obj, Mapping) and obj:
        out: dict[str, object] = {}
        for k in obj:
            out.update(flatten(obj[k], f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: obj} if prefix else {}


def same(a: Any, b: Any) -> bool:
    """Equality that treats NaN as equal to NaN (a run that diverged to NaN twice did not differ)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, bool) != isinstance(b, bool):  # `true` in one config is not `1` in the other
        return False
    if type(a) is not type(b) and not (isinstance(a, (int, float)) and isinstance(b, (int, float))):
        return False
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


def changes(a: Mapping[str, Any], b: Mapping[str, Any], ignore: Iterable[str] = ()) -> list[Change]:
    """Keys whose values differ (or exist on one side only), sorted by key."""
    skip = set(ignore)
    out = []
    for key in sorted(set(a) | set(b)):
        if key in skip:
            continue
        va, vb = a.get(key, ABSENT), b.get(key, ABSENT)
        if va is ABSENT or vb is ABSENT or not same(va, vb):
            out.append(Change(key, va, vb))
    return out


# -- packages ---------------------------------------------------------------------------------------
def package_changes(a: Iterable[str], b: Iterable[str]) -> list[Change]:
    return changes(freeze_versions(a), freeze_versions(b))


# -- outputs and fingerprints -----------------------------------------------------------------------
def output_changes(a: Mapping[str, FileRecord], b: Mapping[str, FileRecord]) -> list[Change]:
    """Output files whose sha256 differ, or that only one run has."""
    return changes({k: v.sha256 for k, v in a.items()}, {k: v.sha256 for k, v in b.items()})


def _by_step(rows: Iterable[Row]) -> dict[int, Row]:
    """Rows merged per step; a later row for the same step (a resumed run) wins field by field."""
    out: dict[int, Row] = {}
    for row in rows:
        step = int(row["step"])
        cur = out.setdefault(step, {"step": step})
        if "loss" in row:
            cur["loss"] = row["loss"]
        if "params_sha256" in row:
            cur["params_sha256"] = row["params_sha256"]
    return out


_COMPARED: tuple[Literal["params_sha256"], Literal["loss"]] = ("params_sha256", "loss")  # parameters first


def parameter_differences(a: Iterable[Row], b: Iterable[Row]) -> list[int]:
    """The steps at which both runs recorded a parameter hash and the hashes differ, in order."""
    ia, ib = _by_step(a), _by_step(b)
    return [
        step
        for step in sorted(set(ia) & set(ib))
        if "params_sha256" in ia[step]
        and "params_sha256" in ib[step]
        and ia[step]["params_sha256"] != ib[step]["params_sha256"]
    ]


def first_divergence(a: Iterable[Row], b: Iterable[Row]) -> Divergence | None:
    """The earliest step where both runs recorded a value and the values differ (parameters are
    checked before the loss of the same step), or where one run's record ends before the other's.
    None when every step both recorded agrees and both end at the same step."""
    ia, ib = _by_step(a), _by_step(b)
    if not ia and not ib:
        return None
    last_common = min(max(ia, default=-1), max(ib, default=-1))
    for step in sorted(set(ia) | set(ib)):
        ra, rb = ia.get(step), ib.get(step)
        if ra is None or rb is None:
            if step > last_common:
                return Divergence(
                    step, "steps", ra if ra is not None else ABSENT, rb if rb is not None else ABSENT
                )
            continue
        for key in _COMPARED:
            if key in ra and key in rb and not same(ra[key], rb[key]):
                return Divergence(step, key, ra[key], rb[key])
    return None


# -- a replay's verdict -----------------------------------------------------------------------------
@dataclass
class Verdict:
    """What a replay found. ``bit_identical`` is the one bit the exit status reports."""

    bit_identical: bool
    status: str  # the replay's run status
    outputs_compared: int
    outputs: list[Change]
    fingerprints_identical: bool | None  # None: the original recorded none
    divergence: Divergence | None
    metrics: list[Change]
    environment: list[Change]
    packages: list[Change]  # as the two training processes listed them
    drift: list[Drift]
    notes: list[str] = field(default_factory=list)
    switches: list[Drift] = field(default_factory=list)  # precision/determinism switches unlike the record's

    def headline(self) -> str:
        if self.bit_identical:
            return "bit-identical: every recorded output and fingerprint matches"
        parts = []
        if self.status != "completed":
            parts.append(f"the replay {self.status}")
        if self.outputs:
            parts.append("outputs differ: " + ", ".join(c.key for c in self.outputs))
        if self.divergence:
            parts.append(f"training diverges at step {self.divergence.step} ({self.divergence.field})")
        elif self.fingerprints_identical is False:
            parts.append("fingerprint files differ")
        if self.switches:
            parts.append("trained under other switches: " + ", ".join(d.what for d in self.switches))
        return "; ".join(parts) or "nothing recorded to verify"

    def to_json(self) -> JsonObject:
        d = asdict(self)
        d["outputs"] = [c.to_json() for c in self.outputs]
        d["metrics"] = [c.to_json() for c in self.metrics]
        d["environment"] = [c.to_json() for c in self.environment]
        d["packages"] = [c.to_json() for c in self.packages]
        d["divergence"] = None if self.divergence is None else self.divergence.to_json()
        d["headline"] = self.headline()
        return d

    @classmethod
    def from_json(cls, data: object, where: str = "verdict") -> Verdict:
        """A verdict as :meth:`to_json` wrote it (``headline`` is derived, not read). Numbers JSON
        cannot hold (NaN, infinities) were written as their text and come back as that text."""
        f = Fields.of(data, where)
        div = f.opt_obj("divergence")
        return cls(
            bit_identical=f.bool_("bit_identical"),
            status=f.str_("status"),
            outputs_compared=f.int_("outputs_compared"),
            outputs=_changes(f, "outputs"),
            fingerprints_identical=f.opt_bool("fingerprints_identical"),
            divergence=None if div is None else Divergence.from_json(div, f"{where}: divergence"),
            metrics=_changes(f, "metrics"),
            environment=_changes(f, "environment"),
            packages=_changes(f, "packages"),
            drift=[Drift.from_json(d.data, d.where) for d in f.items("drift")],
            notes=list(f.strs("notes")),
            switches=[Drift.from_json(d.data, d.where) for d in f.items("switches")],
        )


def _changes(f: Fields, key: str) -> list[Change]:
    return [Change.from_json(c.data, c.where) for c in f.items(key)]


@dataclass(frozen=True)
class VerdictFile:
    """``verdict.json`` in a replay's run dir: which run was replayed into which dir, how its image
    was had, the replay run's own error when it did not complete, and the verdict."""

    original: str
    replay: str
    image: str
    failure: str | None
    verdict: Verdict

    def to_json(self) -> JsonObject:
        head: JsonObject = {"original": self.original, "replay": self.replay, "image": self.image}
        return {**head, "failure": self.failure, **self.verdict.to_json()}

    @classmethod
    def from_json(cls, data: object, where: str = "verdict.json") -> VerdictFile:
        f = Fields.of(data, where)
        return cls(
            original=f.str_("original"),
            replay=f.str_("replay"),
            image=f.str_("image"),
            failure=f.opt_str("failure"),
            verdict=Verdict.from_json(data, where),
        )


def verdict(
    original: Manifest,
    replay: Manifest,
    fp_original: Sequence[Row] | None,
    fp_replay: Sequence[Row] | None,
    drift: Iterable[Drift] = (),
) -> Verdict:
    """Judge a replay against its original from the two manifests and their fingerprint rows.

    Bit-identical means: the replay completed, it wrote exactly the original's output files with
    the same sha256, and (when the original recorded fingerprints) the same fingerprint file.
    ``fp_original`` None means the original's fingerprint file is missing or altered: then only
    the recorded hashes are compared and no diverging step can be named.
    """
    outs = output_changes(original.outputs, replay.outputs)
    fp_same, div, notes = _fingerprints_verdict(original, replay, fp_original, fp_replay)
    drift = list(drift)
    notes += _caveats(original, drift)
    compared = len(original.outputs)
    recorded_fp = original.fingerprints is not None
    identical = (
        replay.status == "completed" and not outs and fp_same is not False and (compared > 0 or recorded_fp)
    )
    return Verdict(
        bit_identical=identical,
        status=replay.status,
        outputs_compared=compared,
        outputs=outs,
        fingerprints_identical=fp_same,
        divergence=div,
        metrics=changes(original.metrics, replay.metrics),
        environment=changes(original.environment, replay.environment, ignore=_RUN_PATHS),
        packages=package_changes(original.packages, replay.packages)
        if original.packages and replay.packages
        else [],
        drift=drift,
        notes=notes,
    )


def _fingerprints_verdict(
    original: Manifest,
    replay: Manifest,
    fp_original: Sequence[Row] | None,
    fp_replay: Sequence[Row] | None,
) -> tuple[bool | None, Divergence | None, list[str]]:
    """Whether the two fingerprint files are the same (None: the original recorded none), the first
    diverging step when they differ and both rows are at hand, and the notes on what was compared."""
    notes: list[str] = []
    fpo, fpr = original.fingerprints, replay.fingerprints
    if fpo:
        fp_same: bool | None = bool(fpr and fpo.sha256 == fpr.sha256)
    else:
        fp_same = None
        notes.append("the original recorded no fingerprints: no step-by-step comparison")
    div = None
    if fp_original is not None and fp_replay is not None and fp_same is False:
        div = first_divergence(fp_original, fp_replay)
    elif fpo and fp_original is None:
        notes.append(
            "the original's fingerprint file is missing or does not match its manifest: "
            "compared by recorded hash only"
        )
    return fp_same, div, notes


def _caveats(original: Manifest, drift: Sequence[Drift]) -> list[str]:
    """What limits the verdict's reach: nothing to verify, a partial original, a profile that does
    not promise identical bits, an environment allowed to drift."""
    notes: list[str] = []
    if not original.outputs and not original.fingerprints:
        notes.append("the original recorded neither outputs nor fingerprints: nothing to verify")
    if original.status != "completed":
        notes.append(f"the original run {original.status}: its outputs are partial")
    profile = original.determinism.profile
    if not profile.get("promises_bitwise", False):
        notes.append(
            f"determinism profile {profile.get('name', '?')!r} does not promise identical bits: "
            "differences are expected and not a fault"
        )
    if drift:
        notes.append("ran with --allow-env-drift: the environment differs from the record (see drift)")
    return notes


# -- two runs side by side --------------------------------------------------------------------------
# Keys that differ between any two runs by construction (names, paths, timings) and say nothing about them.
_RUN_PATHS = ("RUNNER_JOB",)  # the job file's path: inside the run dir, which differs on the host backend
_IGNORED_LAUNCH = ("container",)
_IGNORED_IMAGE = ("built_now", "build_seconds")
SECTIONS = (
    "config",
    "environment",
    "packages",
    "image",
    "host",
    "devices",
    "determinism",
    "launch",
    "code",
    "data",
    "outputs",
    "metrics",
)


@dataclass
class RunDiff:
    """Per section, the keys that differ between run A and run B; plus the first diverging step."""

    a: str
    b: str
    sections: dict[str, list[Change]]
    divergence: Divergence | None
    fingerprints_identical: bool | None
    notes: list[str] = field(default_factory=list)

    @property
    def outputs_identical(self) -> bool:
        return not self.sections["outputs"]

    @property
    def result_changes(self) -> list[Change]:
        """The metrics that differ, measurements of the machine (rates, seconds) left out: two
        bit-identical runs never train at the same speed."""
        return [c for c in self.sections["metrics"] if not is_measurement(c.key)]

    @property
    def differs(self) -> bool:
        """What ``runner diff`` exits 1 for: outputs, fingerprints or result metrics differ."""
        fingerprints_differ = self.divergence is not None or self.fingerprints_identical is False
        return not self.outputs_identical or fingerprints_differ or bool(self.result_changes)

    def to_json(self) -> JsonObject:
        return {
            "a": self.a,
            "b": self.b,
            "differs": self.differs,
            "outputs_identical": self.outputs_identical,
            "fingerprints_identical": self.fingerprints_identical,
            "first_divergence": None if self.divergence is None else self.divergence.to_json(),
            "sections": {name: [c.to_json() for c in rows] for name, rows in self.sections.items()},
            "notes": [n for n in self.notes],
        }


def is_measurement(key: str) -> bool:
    """A metric that measures the machine, not the training (``samples_per_s``, ``epoch_seconds``)."""
    last = key.rsplit(".", 1)[-1].lower()
    return numbers.is_rate(key) or last.endswith(("_seconds", "_secs", "_time")) or last == "seconds"


def diff_runs(
    a: Manifest,
    b: Manifest,
    fp_a: Sequence[Row] | None,
    fp_b: Sequence[Row] | None,
    label_a: str = "A",
    label_b: str = "B",
) -> RunDiff:
    """Compare two manifests section by section; fingerprints rows may be None (absent)."""
    sections = {name: _section_changes(name, a, b) for name in SECTIONS}
    notes = []
    fpa, fpb = a.fingerprints, b.fingerprints
    fp_same = (fpa.sha256 == fpb.sha256) if fpa and fpb else None
    div = None
    if fp_a is not None and fp_b is not None:
        div = first_divergence(fp_a, fp_b)
    else:
        notes.append(
            "fingerprints missing for "
            + " and ".join(n for n, rows in ((label_a, fp_a), (label_b, fp_b)) if rows is None)
            + ": no step-by-step comparison"
        )
    return RunDiff(
        a=label_a, b=label_b, sections=sections, divergence=div, fingerprints_identical=fp_same, notes=notes
    )


_CODE_KEYS = ("commit", "dirty", "snapshot_sha256", "files")


def _section(m: Manifest, name: str) -> Mapping[str, Any]:
    """One section of a manifest as the diff compares it: what says nothing about a run (names,
    build timings, the code archive's file name) left out; the profile is shown once, under
    determinism (with the flags read back in training), not again under config."""
    if name == "config":
        return flatten({k: v for k, v in m.config.items() if k != "determinism"})
    if name == "devices":
        return flatten(m.process or {})
    if name == "launch":
        return flatten({k: v for k, v in m.launch.items() if k not in _IGNORED_LAUNCH})
    if name == "image":
        image = _plain(m.image)
        return flatten({k: v for k, v in image.items() if k not in _IGNORED_IMAGE})
    if name == "code":
        return {k: v for k, v in _plain(m.code).items() if k in _CODE_KEYS}
    if name in ("environment", "metrics"):
        return getattr(m, name)
    return flatten(_plain(getattr(m, name)))


def _plain(section: BaseModel | Mapping[str, Any] | None) -> Mapping[str, Any]:
    if section is None:
        return {}
    return section.model_dump(mode="json") if isinstance(section, BaseModel) else section


def _section_changes(name: str, a: Manifest, b: Manifest) -> list[Change]:
    if name == "packages":
        return package_changes(a.packages, b.packages)
    if name == "outputs":
        return output_changes(a.outputs, b.outputs)
    return changes(_section(a, name), _section(b, name))


# -- helpers ----------------------------------------------------------------------------------------
def _json_value(v: Any) -> Any:
    if v is ABSENT:
        return None
    if isinstance(v, float) and not math.isfinite(v):
        return repr(v)
    return v


def _short(v: Any, key: str | None = None) -> str:
    if isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v):
        return v[:12] + "…"
    return numbers.human(v, key)  # numbers rounded for reading; --json and the manifest keep every digit


def short(v: Any, width: int = 60, key: str | None = None) -> str:
    """A value as a table cell: hashes cut to 12 characters, numbers rounded (:func:`numbers.human`;
    ``key`` tells a rate), long values elided."""
    if v is ABSENT:
        return "—"
    if isinstance(v, str) and v.startswith("sha256:") and len(v) > 19:
        return v[:19] + "…"
    text = _short(v, key) if not isinstance(v, (list, dict)) else json.dumps(v, sort_keys=True)
    return text if len(text) <= width else text[: width - 1] + "…"
