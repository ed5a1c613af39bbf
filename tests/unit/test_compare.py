"""The comparison rules behind replay and diff, on plain data (no Docker)."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runner.core import compare, fingerprints, locks
from runner.core.compare import ABSENT, Change, Drift
from runner.core.errors import RunnerError
from runner.core.json_types import ContractError
from runner.core.manifest import FileRecord, Manifest
from tests.run_records import manifest_dict


def _fp(losses, params=None):
    """Fingerprint rows as the callback writes them: params at step 0, a loss per step."""
    params = params or {}
    rows = [{"step": 0, "params_sha256": params.get(0, "p0")}]
    for step, loss in enumerate(losses, 1):
        row = {"step": step, "loss": loss}
        if step in params:
            row["params_sha256"] = params[step]
        rows.append(row)
    return rows


def test_flatten_nests_with_dots_and_keeps_lists_as_leaves():
    assert compare.flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": {}}) == {
        "a.b": 1,
        "a.c.d": [1, 2],
        "e": {},
    }


def test_changes_reports_values_and_one_sided_keys():
    out = compare.changes({"x": 1, "y": 2, "z": None}, {"x": 1, "y": 3, "w": 0})
    assert out == [Change("w", ABSENT, 0), Change("y", 2, 3), Change("z", None, ABSENT)]
    assert [c.to_json()["only_in"] for c in out] == ["b", None, "a"]


def test_same_treats_nan_as_nan_but_not_as_a_number():
    assert compare.same(math.nan, math.nan)
    assert not compare.same(math.nan, 1.0)
    assert not compare.same(True, 1)  # a bool is not the number 1 in a config
    assert compare.same(1, 1.0)


def test_freeze_lines_parse_with_pips_grammar():
    lines = [
        "Jinja2==3.1.6",
        "zope.interface == 7.0",
        "uvicorn[standard]==0.30.0",
        'tomli==2.0.1 ; python_version < "3.11"',
        "foo @ file:///wheels/foo-1.0.whl",
        "-e git+https://example.org/x.git#egg=x",
        "bar>=1",
        "baz==1.*",
    ]
    assert locks.freeze_versions(lines) == {
        "jinja2": "3.1.6",
        "zope-interface": "7.0",
        "uvicorn": "0.30.0",
        "tomli": "2.0.1",
        "foo @ file:///wheels/foo-1.0.whl": "",
        "-e git+https://example.org/x.git#egg=x": "",
        "bar>=1": "",
        "baz==1.*": "",
    }


def test_a_lock_pins_names_versions_and_hashes_across_continuations():
    h = ["a" * 64, "b" * 64, "c" * 64]
    text = (
        f"# header\n--index-url https://example.org/simple\nJinja2==3.1.6 \\\n    --hash=sha256:{h[0]} \\\n"
        f"    --hash=sha256:{h[1]}\n    # via x\nsix==1.16.0 --hash=sha256:{h[2]}  # inline\nnumpy>=2\n"
        "pytorch_lightning==2.6.6 \\\n"
    )
    pins = locks.lock_pins(text)
    assert pins == {
        "jinja2": locks.Pin("3.1.6", frozenset(h[:2])),
        "six": locks.Pin("1.16.0", frozenset(h[2:])),
        "pytorch-lightning": locks.Pin("2.6.6", frozenset()),
    }
    assert (
        locks.pinned_version(text, "PyTorch-Lightning") == "2.6.6"
        and locks.pinned_version(text, "numpy") is None
    )


@pytest.mark.parametrize(
    "filename, project",
    [
        ("Jinja2-3.1.6-py3-none-any.whl", "jinja2"),
        ("typing_extensions-4.16.0-py3-none-any.whl", "typing-extensions"),
        ("antlr4-python3-runtime-4.9.3.tar.gz", "antlr4-python3-runtime"),
        ("zope.interface-7.0.zip", "zope-interface"),
        ("odd_name-1.0.tgz", "odd-name"),
    ],
)
def test_a_distribution_files_project(filename, project):
    assert locks.distribution_project(filename) == project


def test_packages_compare_by_canonical_name():
    a = ["Jinja2==3.1.6", "typing_extensions==4.16.0", "torch==2.13.0+cpu", "# comment", ""]
    b = ["jinja2==3.1.6", "typing-extensions==4.16.0", "torch==2.12.0", "extra==1"]
    assert compare.package_changes(a, b) == [
        Change("extra", ABSENT, "1"),
        Change("torch", "2.13.0+cpu", "2.12.0"),
    ]


def test_output_changes_compare_sha256_only():
    a = {"m.pt": FileRecord(sha256="a" * 64, bytes=1), "gone": FileRecord(sha256="c" * 64, bytes=1)}
    b = {"m.pt": FileRecord(sha256="b" * 64, bytes=2)}
    assert [c.key for c in compare.output_changes(a, b)] == ["gone", "m.pt"]
    assert compare.output_changes(a, dict(a)) == []


def test_first_divergence_at_step_zero_when_initial_parameters_differ():
    d = compare.first_divergence(_fp([2.3, 2.2], {0: "p0"}), _fp([2.3, 2.2], {0: "q0"}))
    assert (d.step, d.field, d.a, d.b) == (0, "params_sha256", "p0", "q0")


def test_first_divergence_names_the_first_differing_loss():
    a, b = _fp([2.3, 2.2, 2.1, 2.0]), _fp([2.3, 2.2, 2.1000001, 1.9])
    d = compare.first_divergence(a, b)
    assert (d.step, d.field, d.a, d.b) == (3, "loss", 2.1, 2.1000001)
    assert "step 3" in d.describe()


def test_first_divergence_checks_parameters_before_the_loss_of_the_same_step():
    a, b = _fp([2.3, 2.2], {2: "x"}), _fp([2.3, 9.9], {2: "y"})
    assert compare.first_divergence(a, b).field == "params_sha256"


def test_identical_records_do_not_diverge_and_nan_equals_nan():
    assert compare.first_divergence(_fp([2.3, math.nan]), _fp([2.3, math.nan])) is None


def test_a_shorter_record_diverges_where_it_ends():
    d = compare.first_divergence(_fp([2.3, 2.2, 2.1]), _fp([2.3, 2.2]))
    assert (d.step, d.field, d.b) == (3, "steps", ABSENT)


def test_a_resumed_record_overrides_the_steps_it_repeats():
    resumed = _fp([2.3, 2.2, 7.0]) + [{"step": 3, "loss": 2.1}]
    assert compare.first_divergence(resumed, _fp([2.3, 2.2, 2.1])) is None


BAD_LINES = (
    "not json",
    '{"loss": 1.0}',
    '{"step": -1}',
    '{"step": true}',
    '{"step": 1.5}',
    "[1, 2]",
    '{"step": 3, "lo',
)


def test_strict_fingerprints_refuse_a_malformed_line_naming_it():
    assert fingerprints.parse('{"step": 0}\n\n{"step": 1, "loss": 2.0}\n', strict=True)[1]["loss"] == 2.0
    for bad in BAD_LINES:
        with pytest.raises(RunnerError, match=r"^run/fp\.jsonl: line 3 "):
            fingerprints.parse('{"step": 0}\n\n' + bad, strict=True, where="run/fp.jsonl")


def test_tolerant_fingerprints_skip_what_strict_refuses_and_keep_the_rest():
    good = '{"step": 0, "params_sha256": "p"}\n{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n'
    for bad in BAD_LINES:  # a torn last line (a killed run), or garbage between rows
        text = good + bad
        assert fingerprints.parse(text, strict=False) == fingerprints.parse(good, strict=True)
        assert fingerprints.parse(bad + "\n" + good, strict=False) == fingerprints.parse(good, strict=True)
    assert fingerprints.last_step(fingerprints.parse(good + '{"step": 3, "lo', strict=False)) == 2
    assert fingerprints.last_step([]) == 0


def test_loss_curve_keeps_the_later_row_of_a_repeated_step():
    rows = [
        {"step": 0, "params_sha256": "p"},
        {"step": 1, "loss": 3.0},
        {"step": 2, "loss": 2.0},
        {"step": 2, "loss": 1.0},
        {"step": 3, "loss": None},
        {"step": 4, "loss": True},
    ]
    assert fingerprints.losses(rows) == [(1, 3.0), (2, 1.0)]


def _manifest(outputs=("a" * 64,), fp_sha="f" * 64, status="completed", promises=True, **extra) -> Manifest:
    m = {
        **manifest_dict("d" * 64),
        "status": status,
        "outputs": {f"o{i}.pt": {"sha256": h, "bytes": 1} for i, h in enumerate(outputs)},
        "fingerprints": {"file": "fingerprints.jsonl", "sha256": fp_sha, "every_k_steps": 4, "steps": 2}
        if fp_sha
        else None,
        "determinism": {
            "profile": {"name": "strict" if promises else "fast", "promises_bitwise": promises},
            "seed": 0,
        },
        "metrics": {"loss": 1.0},
        "environment": {"A": "1"},
        "packages": [],
    }
    m.update(extra)
    return Manifest.model_validate(m)


def test_verdict_bit_identical_when_every_hash_matches():
    v = compare.verdict(_manifest(), _manifest(), _fp([1.0]), _fp([1.0]))
    assert v.bit_identical and v.headline().startswith("bit-identical")
    assert v.notes == [] and v.outputs_compared == 1


def test_verdict_names_the_output_and_the_step():
    v = compare.verdict(
        _manifest(), _manifest(outputs=("b" * 64,), fp_sha="e" * 64), _fp([1.0, 2.0]), _fp([1.0, 2.5])
    )
    assert not v.bit_identical
    assert [c.key for c in v.outputs] == ["o0.pt"]
    assert v.divergence.step == 2 and v.divergence.field == "loss"
    assert "o0.pt" in v.headline() and "step 2" in v.headline()


def test_verdict_is_not_identical_when_the_replay_failed_or_nothing_was_recorded():
    assert not compare.verdict(_manifest(), _manifest(status="failed"), None, None).bit_identical
    empty = _manifest(outputs=(), fp_sha=None)
    v = compare.verdict(empty, empty, None, None)
    assert not v.bit_identical and any("nothing to verify" in n for n in v.notes)


def test_verdict_for_a_fast_profile_says_it_promises_no_identical_bits():
    v = compare.verdict(_manifest(promises=False), _manifest(promises=False), _fp([1.0]), _fp([1.0]))
    assert v.bit_identical  # the bits may still agree; the note says they need not
    assert any("does not promise identical bits" in n and "'fast'" in n for n in v.notes)


def test_verdict_carries_drift_and_environment_changes():
    drift = [Drift("base image b", "id 1", "id 2")]
    v = compare.verdict(
        _manifest(packages=["torch==2"]),
        _manifest(environment={"A": "2"}, packages=["torch==3"]),
        None,
        None,
        drift,
    )
    assert v.drift == drift and v.environment == [Change("A", "1", "2")]
    assert v.packages == [Change("torch", "2", "3")]
    assert any("--allow-env-drift" in n for n in v.notes)
    assert v.to_json()["drift"] == [{"what": "base image b", "recorded": "id 1", "found": "id 2"}]


def _run(seed: int, container: str, output: str) -> Manifest:
    return Manifest.model_validate(
        manifest_dict(
            "d" * 64,
            config={"seed": seed, "model": {"lr": 0.1}, "determinism": {"name": "strict"}},
            determinism={"seed": seed, "profile": {"name": "strict"}},
            packages=["torch==2"],
            launch={"container": container, "world_size": 2},
            outputs={"m": {"sha256": output * 64, "bytes": 1}},
        )
    )


def test_diff_runs_names_the_seed_and_step_zero():
    a, b = _run(0, "runner-a", "a"), _run(1, "runner-b", "b")
    d = compare.diff_runs(a, b, _fp([2.3], {0: "p"}), _fp([2.3], {0: "q"}))
    assert d.sections["config"] == [Change("seed", 0, 1)]
    assert d.sections["determinism"] == [Change("seed", 0, 1)]
    assert d.sections["launch"] == []  # container names differ by construction and are not reported
    assert d.sections["packages"] == [] and not d.outputs_identical
    assert d.divergence.step == 0
    j = d.to_json()
    assert j["first_divergence"]["step"] == 0 and j["sections"]["config"][0]["key"] == "seed"
    assert set(j["sections"]) == set(compare.SECTIONS)


def test_diff_runs_tolerates_records_without_fingerprints():
    bare = _manifest(outputs=(), fp_sha=None)
    d = compare.diff_runs(bare, bare, None, [])
    assert d.divergence is None and all(rows == [] for rows in d.sections.values())
    assert d.fingerprints_identical is None
    assert any("fingerprints missing" in n for n in d.notes)


def test_diff_runs_differs_on_outputs_fingerprints_or_result_metrics_not_on_speed():
    base = _manifest(metrics={"loss": 1.0, "samples_per_s": 900.0, "train_seconds": 3.0})
    faster = _manifest(metrics={"loss": 1.0, "samples_per_s": 1200.0, "train_seconds": 2.0})
    d = compare.diff_runs(base, faster, _fp([1.0]), _fp([1.0]))
    assert not d.differs and d.to_json()["differs"] is False  # a bit-identical replay on another day
    assert [c.key for c in d.sections["metrics"]] == ["samples_per_s", "train_seconds"]  # still shown
    assert compare.diff_runs(base, _manifest(metrics={"loss": 1.5}), None, None).differs
    assert compare.diff_runs(base, _manifest(outputs=("b" * 64,)), None, None).differs
    d = compare.diff_runs(base, _manifest(fp_sha="e" * 64), _fp([1.0, 2.0]), _fp([1.0, 2.5]))
    assert d.differs and d.divergence.step == 2
    assert compare.diff_runs(base, _manifest(fp_sha="e" * 64), None, None).differs  # by hash alone


# -- verdict.json -----------------------------------------------------------------------------------------
_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)
# one side may lack the key, never both
_absent = st.just(ABSENT)
_sides = st.tuples(_values, _values) | st.tuples(_absent, _values) | st.tuples(_values, _absent)
_changes = st.lists(st.builds(lambda k, ab: Change(k, *ab), st.text(max_size=8), _sides), max_size=3)
_drifts = st.lists(
    st.builds(Drift, st.text(max_size=8), st.text(max_size=8), st.text(max_size=8)), max_size=2
)
_verdicts = st.builds(
    compare.Verdict,
    bit_identical=st.booleans(),
    status=st.sampled_from(["completed", "failed", "interrupted"]),
    outputs_compared=st.integers(min_value=0, max_value=10**6),
    outputs=_changes,
    fingerprints_identical=st.none() | st.booleans(),
    divergence=st.none()
    | st.builds(
        lambda step, field, ab: compare.Divergence(step, field, *ab),
        st.integers(min_value=0, max_value=10**6),
        st.sampled_from(["loss", "steps"]),
        _sides,
    ),
    metrics=_changes,
    environment=_changes,
    packages=_changes,
    drift=_drifts,
    notes=st.lists(st.text(max_size=20), max_size=3),
    switches=_drifts,
)
_files = st.builds(
    compare.VerdictFile,
    st.text(max_size=10),
    st.text(max_size=10),
    st.text(max_size=10),
    st.none() | st.text(max_size=10),
    _verdicts,
)


@given(_files)
@settings(max_examples=150, deadline=None)
def test_a_verdict_file_reads_back_as_it_was_written_absent_sides_included(doc):
    assert compare.VerdictFile.from_json(json.loads(json.dumps(doc.to_json()))) == doc


@given(doc=_files, data=st.data())
@settings(max_examples=100, deadline=None)
def test_a_verdict_file_with_any_field_changed_is_read_or_refused_in_one_line(doc, data):
    text = doc.to_json()
    key = data.draw(st.sampled_from(sorted(text)))
    text[key] = data.draw(_values)
    try:
        compare.VerdictFile.from_json(text)
    except ContractError as exc:
        assert str(exc).startswith("verdict.json") and "\n" not in str(exc)


def test_a_verdict_file_written_before_sides_were_marked_is_read():
    old = {
        "original": "/runs/a",
        "replay": "/runs/a/replays/1",
        "image": "reused",
        "failure": None,
        "bit_identical": False,
        "status": "completed",
        "outputs_compared": 1,
        "outputs": [{"key": "model.pt", "a": "a" * 64, "b": "b" * 64, "only_in": None}],
        "fingerprints_identical": False,
        "divergence": {"step": 7, "field": "loss", "a": 0.5, "b": 0.25},
        "metrics": [],
        "environment": [],
        "packages": [],
        "drift": [],
        "notes": [],
        "headline": "outputs differ: model.pt; training diverges at step 7 (loss)",
    }  # no switches, no only_in on the divergence
    v = compare.VerdictFile.from_json(old).verdict
    assert v.divergence == compare.Divergence(7, "loss", 0.5, 0.25) and v.switches == []
    assert v.headline() == old["headline"]
    with pytest.raises(ContractError, match=r"^verdict.json: divergence: step must be an integer >= 0"):
        compare.VerdictFile.from_json({**old, "divergence": {"step": "7", "field": "loss"}})
