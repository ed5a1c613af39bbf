"""The environment checks a replay makes before it runs (files and data only; no Docker)."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.core import manifest
from runner.core.compare import Drift
from runner.core.digests import sha256_bytes
from runner.host import rebuild
from runner.host.hashing import HashCache

LOCK = """\
# a comment line
six==1.16.0 \\
    --hash=sha256:{six}
    # via whatever
Jinja2==3.1.6 \\
    --hash=sha256:{j1} \\
    --hash=sha256:{j2}
antlr4-python3-runtime==4.9.3 \\
    --hash=sha256:{antlr}
"""


@pytest.fixture()
def cache(tmp_path) -> HashCache:
    return HashCache(tmp_path / "hashes.sqlite")


def _wheelhouse(tmp_path: Path, six: bytes = b"six wheel") -> tuple[Path, Path]:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "six-1.16.0-py2.py3-none-any.whl").write_bytes(six)
    (wheels / "jinja2-3.1.6-py3-none-any.whl").write_bytes(b"jinja wheel")
    (wheels / "antlr4-python3-runtime-4.9.3.tar.gz").write_bytes(b"antlr sdist")
    (wheels / ".complete").touch()
    lock = tmp_path / "cpu.lock"
    lock.write_text(
        LOCK.format(
            six=sha256_bytes(b"six wheel"),
            j1="0" * 64,
            j2=sha256_bytes(b"jinja wheel"),
            antlr=sha256_bytes(b"antlr sdist"),
        )
    )
    return lock, wheels


def test_lock_pins_reads_names_versions_and_every_hash(tmp_path):
    lock, _ = _wheelhouse(tmp_path)
    pins = rebuild.lock_pins(lock.read_text())
    assert set(pins) == {"six", "jinja2", "antlr4-python3-runtime"}
    assert pins["jinja2"][0] == "3.1.6" and len(pins["jinja2"][1]) == 2


def test_a_wheelhouse_that_matches_its_lock_has_no_drift(tmp_path, cache):
    lock, wheels = _wheelhouse(tmp_path)
    assert rebuild.check_wheels(lock, wheels, cache) == []


def test_a_wheel_whose_hash_no_longer_matches_is_named(tmp_path, cache):
    lock, wheels = _wheelhouse(tmp_path, six=b"a different six wheel")
    drift = rebuild.check_wheels(lock, wheels, cache)
    assert len(drift) == 1
    d = drift[0]
    assert d.what == "wheel six-1.16.0-py2.py3-none-any.whl"
    assert "six==1.16.0" in d.recorded and sha256_bytes(b"a different six wheel")[:16] in d.found


def test_a_pinned_wheel_missing_from_the_wheelhouse_is_named(tmp_path, cache):
    lock, wheels = _wheelhouse(tmp_path)
    (wheels / "jinja2-3.1.6-py3-none-any.whl").unlink()
    assert rebuild.check_wheels(lock, wheels, cache) == [
        Drift("wheel for jinja2==3.1.6", "pinned by cpu.lock", "missing from the wheelhouse")
    ]


def test_the_repository_lock_parses_completely():
    root = Path(__file__).resolve().parents[2]
    text = (root / "images" / "cpu.lock").read_text()
    pins = rebuild.lock_pins(text)
    pinned_lines = [ln for ln in text.splitlines() if "==" in ln and not ln.lstrip().startswith("#")]
    assert len(pins) == len(pinned_lines) and all(hashes for _, hashes in pins.values())
    assert "torch" in pins


def test_redacted_variables_come_from_this_host_or_are_drift():
    recorded = {"PYTHONHASHSEED": "0", "WANDB_API_KEY": manifest.REDACTED, "HF_TOKEN": manifest.REDACTED}
    env, drift = rebuild.recorded_variables(recorded, {"WANDB_API_KEY": "k", "PYTHONHASHSEED": "99"})
    assert env == {"PYTHONHASHSEED": "0", "WANDB_API_KEY": "k"}  # recorded values win over the host's
    assert drift == [Drift("variable HF_TOKEN", "set (its value is redacted in the record)", "not set")]


def test_data_files_are_checked_by_hash(tmp_path, cache):
    (tmp_path / "a.gz").write_bytes(b"aaa")
    (tmp_path / "b.gz").write_bytes(b"changed")
    data = manifest.Data(
        name="d",
        root=str(tmp_path),
        files={
            "a.gz": {"sha256": sha256_bytes(b"aaa"), "bytes": 3},
            "b.gz": {"sha256": sha256_bytes(b"bbb"), "bytes": 3},
            "c.gz": {"sha256": sha256_bytes(b"ccc"), "bytes": 3},
        },
    )
    drift = rebuild.check_data(data, cache)
    assert [(d.what.rsplit("/", 1)[-1], d.found) for d in drift] == [
        ("b.gz", f"sha256 {sha256_bytes(b'changed')[:12]}…"),
        ("c.gz", "missing"),
    ]


def test_build_inputs_are_taken_from_the_snapshot_and_checked(tmp_path):
    (tmp_path / "Dockerfile.cpu").write_text("FROM x\n")
    _, none = rebuild.check_file(tmp_path, "Dockerfile.cpu", sha256_bytes(b"FROM x\n"), "Dockerfile")
    _, changed = rebuild.check_file(tmp_path, "Dockerfile.cpu", "1" * 64, "Dockerfile")
    _, missing = rebuild.check_file(tmp_path, "images/cpu.lock", "1" * 64, "lock")
    assert (
        none == [] and "in the snapshot" in changed[0].what and missing[0].found == "not in the code snapshot"
    )


def test_package_drift_and_the_stop_message_name_every_item():
    drift = rebuild.package_drift(
        ["torch==2.13.0+cpu", "numpy==2.4.6"], ["torch==2.12.0", "numpy==2.4.6", "x==1"], "in img"
    )
    assert [d.describe() for d in drift] == [
        "package torch: recorded 2.13.0+cpu, here 2.12.0 in img",
        "package x: recorded absent, here 1 in img",
    ]
    exc = rebuild.EnvironmentDrift(drift)
    assert exc.exit_code == 3 and "torch" in exc.message and "--allow-env-drift" in exc.message
    assert "\n" not in exc.message
