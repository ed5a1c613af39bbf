"""Manifests and snapshot archives are data: malformed or hostile ones get a clear RunnerError (one
line), never a traceback, and nothing is written outside the run dir and the snapshot's own cache
entry. Property-based (hypothesis), no Docker: the reader, the extractor, and the commands that
take a run dir (``+resume=RUN_DIR``, replay, diff) are fed what no runner wrote."""

from __future__ import annotations

import io
import json
import tarfile
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.core.digests import sha256_bytes
from runner.core.errors import RunnerError
from runner.flows import diff, replay, resume
from runner.host import records, snapshot
from tests.conftest import run_runner
from tests.run_records import manifest_dict

SETTINGS = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _tree(root: Path) -> dict[str, str]:
    """Every file under root (links as their target) → content hash: what "nothing written" compares."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = "link:" + str(p.readlink())
        elif p.is_file():
            out[rel] = sha256_bytes(p.read_bytes())
    return out


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("RUNNER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent")  # nothing here may reach an engine


def _one_line(exc: RunnerError) -> None:
    assert exc.message and "\n" not in exc.message and "Traceback" not in exc.message


# -- manifests -------------------------------------------------------------------------------------

_json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=8)
)
_json = st.recursive(
    _json_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)


@st.composite
def manifest_bytes(draw) -> bytes:
    """What a manifest.json might hold after a crash, an edit or an attack."""
    base = manifest_dict("a" * 64, status="interrupted", exit_code=130)
    kind = draw(st.sampled_from(["bytes", "json", "field", "drop", "deep", "bigint", "truncated", "extra"]))
    if kind == "bytes":
        return draw(st.binary(max_size=64))
    if kind == "json":
        return json.dumps(draw(_json)).encode()
    if kind == "field":  # a known field set to any JSON value
        key = draw(st.sampled_from(sorted(base)))
        return json.dumps({**base, key: draw(_json)}).encode()
    if kind == "drop":
        key = draw(st.sampled_from(sorted(base)))
        return json.dumps({k: v for k, v in base.items() if k != key}).encode()
    if kind == "deep":  # nesting past the JSON parser's recursion limit
        n = draw(st.integers(min_value=2_000, max_value=200_000))
        return ('{"schema_version": 1, "config": ' + "[" * n + "]" * n + "}").encode()
    if kind == "bigint":  # past Python's int-from-string digit limit
        return ('{"schema_version": 1, "exit_code": ' + "9" * draw(st.integers(4_301, 20_000)) + "}").encode()
    if kind == "truncated":  # a write cut short (what the atomic write exists to prevent)
        whole = json.dumps(base).encode()
        return whole[: draw(st.integers(0, len(whole) - 1))]
    return json.dumps(
        {**base, draw(st.text(min_size=1, max_size=8).filter(lambda k: k not in base)): 1}
    ).encode()


@SETTINGS
@given(data=manifest_bytes())
def test_manifest_read_gives_a_record_or_one_clear_error(data):
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp)
        (run / "manifest.json").write_bytes(data)
        before = _tree(run)
        try:
            m = records.read_manifest(run)
        except RunnerError as exc:
            _one_line(exc)
            assert exc.exit_code == 2
        else:  # a record only of a file whose every field the schema accepts, holding what it says
            written = json.loads(data)
            assert m.model_dump(mode="json", exclude_unset=True) == written
        assert _tree(run) == before


@SETTINGS
@given(data=manifest_bytes(), status=st.sampled_from(["interrupted", "failed", "completed"]))
def test_resume_refuses_a_malformed_record_and_writes_nothing(data, status, tmp_path_factory):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run = root / "run"
        run.mkdir()
        (run / "manifest.json").write_bytes(data)
        (run / "code.tar").write_bytes(b"not an archive")
        before = _tree(root)
        with pytest.raises(RunnerError) as exc:
            resume.resume(run, [f"+resume={run}"], echo=lambda line: None)
        _one_line(exc.value)
        assert _tree(root) == before


def test_resume_from_the_command_line_is_one_line_for_a_bad_record(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text('{"schema_version": 1, "status": "interrupted"')
    p = run_runner(f"+resume={run}", env={"RUNNER_CACHE": str(tmp_path / "cache")})
    assert p.returncode == 2
    assert p.stderr.strip().startswith("runner: error:") and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "Traceback" not in p.stderr


def test_resume_arguments_are_checked_before_anything_runs(tmp_path):
    """Only a path means single-run resume; other overrides beside it are refused."""
    for flag in (
        "+resume=true",
        "+resume=false",
    ):  # the sweep's setting has its own name, and the error says it
        with pytest.raises(RunnerError, match="hydra.launcher.skip_completed=true"):
            resume.requested([flag])
    assert resume.requested(["+resume=/a/b"]) == Path("/a/b") and resume.requested(["+resume='x y'"]) == Path(
        "x y"
    )
    p = run_runner(f"+resume={tmp_path}", "seed=3")
    assert p.returncode == 2 and "recorded config" in p.stderr and "Traceback" not in p.stderr
    p = run_runner(f"+resume={tmp_path / 'absent'}")
    assert p.returncode == 2 and "no such run dir" in p.stderr
    p = run_runner(f"+resume={tmp_path}")
    assert p.returncode == 2 and "no manifest" in p.stderr


# -- snapshot archives -----------------------------------------------------------------------------

_NAMES = st.one_of(
    st.sampled_from(
        [
            "a",
            "a/b",
            "./c",
            "d/",
            "../up",
            "../../etc/passwd",
            "/abs",
            "a/../../x",
            "",
            ".",
            "..",
            "x" * 300,
            "a/./b",
            "con/..",
            "é/ü",
        ]
    ),
    st.text(alphabet="ab./", min_size=1, max_size=12),
)
_TYPES = st.sampled_from(
    [
        tarfile.REGTYPE,
        tarfile.DIRTYPE,
        tarfile.SYMTYPE,
        tarfile.LNKTYPE,
        tarfile.CHRTYPE,
        tarfile.BLKTYPE,
        tarfile.FIFOTYPE,
        tarfile.CONTTYPE,
    ]
)
_member = st.tuples(
    _NAMES,
    _TYPES,
    st.binary(max_size=16),
    st.sampled_from(["a", "/etc", "../../x", "..", "b/c"]),
    st.sampled_from([0o644, 0o755, 0o000, 0o4755, 0o7777]),
)


def _archive(members, compression: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(
        fileobj=buf, mode=f"w:{compression}" if compression else "w", format=tarfile.PAX_FORMAT
    ) as tar:
        for name, kind, data, target, mode in members:
            info = tarfile.TarInfo(name)
            info.type, info.mode = kind, mode
            if kind in (tarfile.REGTYPE, tarfile.CONTTYPE):
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                info.linkname = target
                tar.addfile(info)
    return buf.getvalue()


@st.composite
def archive_bytes(draw) -> bytes:
    whole = _archive(draw(st.lists(_member, max_size=6)), draw(st.sampled_from(["", "gz", "bz2", "xz"])))
    how = draw(st.sampled_from(["whole", "truncate", "flip", "garbage"]))
    if how == "truncate":
        return whole[: draw(st.integers(0, max(len(whole) - 1, 0)))]
    if how == "flip":
        b = bytearray(whole)
        for _ in range(draw(st.integers(1, 8))):
            if b:
                b[draw(st.integers(0, len(b) - 1))] ^= draw(st.integers(1, 255))
        return bytes(b)
    if how == "garbage":
        return draw(st.binary(max_size=2048))
    return whole


def _check_extraction(root: Path, target: Path) -> None:
    """An accepted archive lands under its cache entry only, as plain files and dirs."""
    assert target.parent == Path(root / "cache" / "snapshots") and (target / ".complete").is_file()
    for p in target.rglob("*"):
        assert not p.is_symlink() and (p.is_file() or p.is_dir()), p
        assert p.resolve().is_relative_to(target.resolve())
        assert not p.stat().st_mode & 0o6000, f"{p} kept a setuid/setgid bit"


def _run_dir_holding(root: Path, data: bytes, monkeypatch) -> tuple[Path, Path]:
    """``root/run`` holding ``data`` as its code archive, with the runner's cache under ``root``."""
    monkeypatch.setenv("RUNNER_CACHE", str(root / "cache"))
    run = root / "run"
    run.mkdir()
    (run / "code.tar").write_bytes(data)
    return root, run


@SETTINGS
@given(data=archive_bytes())
def test_snapshot_extract_confines_or_refuses_any_archive(data, tmp_path_factory, monkeypatch):
    with tempfile.TemporaryDirectory() as tmp:
        root, run = _run_dir_holding(Path(tmp), data, monkeypatch)
        digest = sha256_bytes(data)
        before = _tree(run)
        try:
            target = snapshot.extract(run / "code.tar", digest)
        except RunnerError as exc:
            _one_line(exc)
            snaps = root / "cache" / "snapshots"
            assert not snaps.exists() or not any(snaps.iterdir()), (
                "a refused archive left something in the cache"
            )
        else:
            _check_extraction(root, target)
        assert _tree(run) == before
        outside = {
            p for p in root.rglob("*") if not p.is_relative_to(run) and not p.is_relative_to(root / "cache")
        }
        assert not outside, f"written outside the run dir and the cache: {outside}"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=archive_bytes(), status=st.sampled_from(["interrupted", "failed"]))
def test_replay_diff_and_resume_refuse_a_hostile_snapshot_cleanly(data, status, monkeypatch):
    """A schema-valid record whose archive (hash and all) is hostile: the three commands that read a
    run dir answer with a RunnerError (an engine is unreachable here, so none may run anything) or,
    for diff, a comparison; none writes outside the run dir."""
    with tempfile.TemporaryDirectory() as tmp:
        root, run = _run_dir_holding(Path(tmp), data, monkeypatch)
        m = manifest_dict(sha256_bytes(data), status=status, exit_code=1)
        (run / "manifest.json").write_text(json.dumps(m))
        before = _tree(run)
        for call in (
            lambda: replay.replay(run, root / "out", echo=lambda line: None),
            lambda: resume.resume(run, [f"+resume={run}"], echo=lambda line: None),
        ):
            with pytest.raises(RunnerError) as exc:
                call()
            _one_line(exc.value)
        try:
            diff.diff(str(run), str(run))
        except RunnerError as exc:
            _one_line(exc)
        assert _tree(run) == before and not (root / "out").exists()
        assert {p.name for p in root.iterdir()} <= {"run", "cache"}


def test_archive_that_escapes_is_refused_by_name():
    """The named cases, so a regression says which one broke."""
    cases = {
        "parent": [("../evil", tarfile.REGTYPE, b"x", "", 0o644)],
        "absolute": [("/tmp/evil", tarfile.REGTYPE, b"x", "", 0o644)],
        "symlink": [("link", tarfile.SYMTYPE, b"", "/etc/passwd", 0o777)],
        "hardlink": [("hard", tarfile.LNKTYPE, b"", "../../etc/passwd", 0o644)],
        "device": [("dev", tarfile.CHRTYPE, b"", "", 0o644)],
        "fifo": [("fifo", tarfile.FIFOTYPE, b"", "", 0o644)],
        "file_then_dir": [("a", tarfile.REGTYPE, b"x", "", 0o644), ("a/b", tarfile.REGTYPE, b"y", "", 0o644)],
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, members in cases.items():
            path = root / f"{name}.tar"
            path.write_bytes(_archive(members, ""))
            with pytest.raises(RunnerError) as exc:
                snapshot.extract(path, sha256_bytes(path.read_bytes()))
            _one_line(exc.value)
        assert not (root.parent / "evil").exists() and not Path("/tmp/evil").exists()
