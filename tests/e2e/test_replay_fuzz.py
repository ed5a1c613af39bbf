"""Malformed records fed to replay and diff: always a clean RunnerError, never a traceback, and no file
written anywhere (property-based, no Docker)."""

from __future__ import annotations

import copy
import json
import os
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.core.digests import sha256_bytes
from runner.core.errors import RunnerError
from runner.flows import diff, replay
from tests.run_records import code_tar, manifest_dict

SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

_small = st.one_of(st.integers(), st.text(max_size=4), st.booleans(), st.none())
_list = st.lists(_small, max_size=3)
_dict = st.dictionaries(st.text(max_size=4), _small, max_size=3)
# Values of a type pydantic will not coerce into the field's type, even in lax mode.
WRONG = {
    str: st.one_of(_list, _dict),
    int: st.one_of(_list, _dict, st.text(alphabet="xyz", min_size=1)),
    bool: st.one_of(_list, _dict, st.text(alphabet="xz", min_size=1)),  # not "y": lax mode reads it as True
    list: st.one_of(_dict, st.integers(), st.text(alphabet="xyz", min_size=1)),
    dict: st.one_of(_list, st.integers(), st.text(alphabet="xyz", min_size=1)),
}
REQUIRED = {
    "run_id": str,
    "status": str,
    "exit_code": int,
    "command": list,
    "overrides": list,
    "config": dict,
    "experiment": dict,
    "containerized": bool,
    "launch": dict,
    "environment": dict,
    "determinism": dict,
    "host": dict,
    "timings": dict,
}
NOT_HEX64 = st.text(max_size=70).filter(lambda s: not re.fullmatch(r"[0-9a-f]{64}", s))


def _mutate(kind: str, key: str, value, m: dict) -> dict:
    m = copy.deepcopy(m)
    if kind == "drop":
        del m[key]
    elif kind == "wrong_type":
        m[key] = value
    elif kind == "schema":
        m["schema_version"] = value
    elif kind == "nested":
        where, field = key.split(".", 1)
        m[where] = {**(m[where] or {}), field: value} if isinstance(m.get(where), dict) else {field: value}
    return m


@st.composite
def malformed_manifest_bytes(draw) -> bytes:
    """Bytes of a manifest.json that no reader may accept."""
    base = manifest_dict("a" * 64)
    kind = draw(
        st.sampled_from(
            ["drop", "wrong_type", "schema", "nested", "status", "not_json", "not_object", "binary"]
        )
    )
    if kind == "drop":
        m = _mutate("drop", draw(st.sampled_from(sorted(REQUIRED) + ["schema_version"])), None, base)
    elif kind == "wrong_type":
        key = draw(st.sampled_from(sorted(REQUIRED)))
        m = _mutate("wrong_type", key, draw(WRONG[REQUIRED[key]]), base)
    elif kind == "schema":
        m = _mutate("schema", "", draw(st.one_of(_small, _list).filter(lambda v: v != 1)), base)
    elif kind == "nested":
        key, value = draw(
            st.sampled_from(
                [
                    ("code.snapshot_sha256", NOT_HEX64),
                    ("code.dirty", WRONG[bool]),
                    ("determinism.seed", WRONG[int]),
                    ("timings.started", WRONG[int]),
                    ("outputs.model.pt", WRONG[dict]),
                    ("code.unknown", _small),
                ]
            ).flatmap(lambda kv: st.tuples(st.just(kv[0]), kv[1]))
        )
        m = _mutate("nested", key, value, base)
    elif kind == "status":
        m = {
            **base,
            "status": draw(
                st.text(max_size=12).filter(lambda s: s not in ("completed", "failed", "interrupted"))
            ),
        }
    elif kind == "not_json":
        return draw(st.text(max_size=40).filter(_not_json)).encode()
    elif kind == "not_object":
        return json.dumps(draw(st.one_of(_small, _list))).encode()
    else:
        return b"\xff\xfe" + draw(st.binary(max_size=20))
    return json.dumps(m).encode()


def _not_json(s: str) -> bool:
    try:
        json.loads(s)
    except ValueError:
        return True
    return False


def _tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): sha256_bytes(p.read_bytes()) for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(autouse=True)
def _isolated_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("RUNNER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(
        "DOCKER_HOST", "unix:///nonexistent"
    )  # should anything reach the engine, it fails loudly


@SETTINGS
@given(data=malformed_manifest_bytes())
def test_malformed_manifests_get_a_clean_error_and_write_nothing(data):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        bad, good = root / "bad", root / "good"
        for d in (bad, good):
            d.mkdir()
            (d / "code.tar").write_bytes(b"")
        (bad / "manifest.json").write_bytes(data)
        (good / "manifest.json").write_text(json.dumps(manifest_dict("a" * 64)))
        before = _tree(root)
        cache_before = (
            _tree(Path(os.environ["RUNNER_CACHE"])) if Path(os.environ["RUNNER_CACHE"]).exists() else {}
        )

        with pytest.raises(RunnerError) as exc:
            replay.replay(bad, root / "out")
        assert exc.value.exit_code == 2 and "\n" not in exc.value.message
        for a, b in ((bad, good), (good, bad)):
            with pytest.raises(RunnerError):
                diff.diff(str(a), str(b))

        assert _tree(root) == before and not (root / "out").exists() and not (bad / "replays").exists()
        cache = Path(os.environ["RUNNER_CACHE"])
        assert (_tree(cache) if cache.exists() else {}) == cache_before


@SETTINGS
@given(
    fp_text=st.text(max_size=200),
    fp_name=st.sampled_from(["fingerprints.jsonl", "../fingerprints.jsonl", "/etc/passwd", "", ".", "a/b"]),
    snapshot_name=st.sampled_from(["code.tar", "../code.tar", "/tmp/code.tar", ".."]),
    tar_ok=st.booleans(),
)
def test_odd_fingerprints_and_snapshot_names_never_escape_or_crash(fp_text, fp_name, snapshot_name, tar_ok):
    """Schema-valid records whose files are odd: diff either works or raises RunnerError; replay
    always stops with a RunnerError here (the snapshot is missing, altered or outside the run dir)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run = root / "run"
        run.mkdir()
        digest = code_tar(run / "code.tar", [("../evil", b"x")] if not tar_ok else [])
        (run / "fingerprints.jsonl").write_text(fp_text)
        m = manifest_dict(digest if tar_ok else "b" * 64)
        m["code"]["snapshot"] = snapshot_name
        m["fingerprints"] = {
            "file": fp_name,
            "sha256": sha256_bytes(fp_text.encode()),
            "every_k_steps": 1,
            "steps": 1,
        }
        (run / "manifest.json").write_text(json.dumps(m))
        before = _tree(root)

        try:
            d = diff.diff(str(run), str(run))
            assert d.outputs_identical and d.divergence is None
        except RunnerError as exc:
            assert "\n" not in exc.message
        with pytest.raises(RunnerError):
            replay.replay(run, root / "out")

        assert _tree(root) == before and not (root / "out").exists()
        assert not (root / "evil").exists()
