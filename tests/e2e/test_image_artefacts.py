"""The environment travels: a run's image is pushed to the registry (``make registry``) and recorded
by digest, and exported as one file; on a machine where the image is gone and the base image was made
again (a new id, as on any other machine), ``replay --image FILE`` and a replay that pulls by the
recorded digest are both bit-identical with no drift, and without either the refusal says in one line
how to get the exact image.

The run builds on a base of the test's own (the shared base plus a label: a new id each time it is
made), so removing and remaking it never touches the shared ``runner-base:bookworm`` or its images.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest

from runner.core.errors import EXIT_ENVIRONMENT
from runner.host.engine import Engine
from runner.host.hashing import sha256_file
from tests.conftest import FAST, manifest, run_runner
from tests.run_records import resealed

pytestmark = pytest.mark.docker

SHARED_BASE = "runner-base:bookworm"
REGISTRY = "127.0.0.1:5000/runner-test-artefacts"


def _make_base(engine: Engine, ref: str, tmp: Path) -> str:
    """The shared base under a name of the test's own, made again: a new image id each time."""
    dockerfile = tmp / f"Dockerfile.{uuid.uuid4().hex[:8]}"
    dockerfile.write_text(f"FROM {SHARED_BASE}\n")
    made = uuid.uuid4().hex
    labels = {"org.runner.test-base-made": made}
    return engine.build(ref, dockerfile, {}, {}, labels, on_line=lambda line: None)


@pytest.fixture(scope="module")
def recorded(engine: Engine, tmp_path_factory):
    """A run on the test's own base with image.registry set, and its image exported as a file."""
    tmp = tmp_path_factory.mktemp("artefacts")
    base = f"runner-test-artefacts-base:{uuid.uuid4().hex[:12]}"
    base_id = _make_base(engine, base, tmp)
    run_dir = tmp / "run"
    proc = run_runner(
        f"hydra.run.dir={run_dir}",
        *FAST,
        "+image.variants.cpu.build_args.TEST_VARIANT=artefacts",
        f"image.variants.cpu.base.ref={base}",
        f"image.registry={REGISTRY}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    image = manifest(run_dir)["image"]
    assert image["base_ref"] == base and image["base_id"] == base_id
    out = tmp / "image.tar"
    exported = run_runner("export", str(run_dir), "-o", str(out), module="runner.cli")
    assert exported.returncode == 0, exported.stderr[-3000:]
    yield {"run": run_dir, "image": image, "file": out, "base": base, "export": exported, "tmp": tmp}
    engine.remove_image(image["id"])
    engine.remove_image(base)


def _elsewhere(engine: Engine, rec: dict) -> None:
    """This machine as another one: the run's image gone, its base made again with a new id."""
    engine.remove_image(rec["image"]["id"])
    assert engine.image_id(rec["image"]["id"]) is None and engine.image_id(rec["image"]["tag"]) is None
    engine.remove_image(rec["base"])
    assert _make_base(engine, rec["base"], rec["tmp"]) != rec["image"]["base_id"]


def _replay(run_dir: Path, out: Path, *args: str):
    return run_runner(str(run_dir), "--out", str(out), "--json", *args, module="runner.replay")


def test_the_record_names_the_image_by_registry_digest_and_the_file_by_sha256(recorded):
    image, out = recorded["image"], recorded["file"]
    assert (
        image["registry_ref"].startswith(f"{REGISTRY}@sha256:")
        and len(image["registry_ref"]) == len(REGISTRY) + 72
    )
    digest = sha256_file(out)
    assert recorded["export"].stdout == f"{digest}  {out}\n"  # as sha256sum prints it
    record = json.loads(Path(f"{out}.json").read_text())
    assert record["sha256"] == digest and record["format"] == "docker-archive"
    assert record["image_id"] == image["id"] and record["registry_ref"] == image["registry_ref"]
    assert record["tag"] == image["tag"] and record["run"]["manifest_sha256"] == sha256_file(
        recorded["run"] / "manifest.json"
    )


def test_on_another_machine_the_image_file_and_the_registry_both_replay_bit_identical(
    recorded, engine, tmp_path
):
    run_dir, image = recorded["run"], recorded["image"]
    _elsewhere(engine, recorded)

    from_file = _replay(run_dir, tmp_path / "from-file", "--image", str(recorded["file"]))
    assert from_file.returncode == 0, from_file.stderr[-3000:]
    verdict = json.loads(from_file.stdout)
    assert verdict["bit_identical"] and verdict["drift"] == []
    assert manifest(tmp_path / "from-file")["image"]["id"] == image["id"]
    assert f"loaded {image['tag']} from {recorded['file']} (the recorded image id)" in from_file.stderr

    engine.remove_image(image["id"])  # and again: this time the registry gives it, by its digest
    pulled = _replay(run_dir, tmp_path / "pulled")
    assert pulled.returncode == 0, pulled.stderr[-3000:]
    verdict = json.loads(pulled.stdout)
    assert verdict["bit_identical"] and verdict["drift"] == []
    assert f"pulled {image['registry_ref']} (the recorded digest and image id)" in pulled.stderr
    assert engine.image_id(image["id"]) == image["id"]


def test_without_the_file_or_the_registry_the_refusal_says_how_to_get_the_exact_image(
    recorded, engine, tmp_path
):
    _elsewhere(engine, recorded)
    m = manifest(recorded["run"])
    cases = {
        "no-registry": (None, "the exact image: `runner export RUN_DIR -o FILE` where it was recorded"),
        "registry-down": (
            m["image"]["registry_ref"].replace("127.0.0.1:5000", "127.0.0.1:5999"),
            "could not be pulled (start its registry, or `runner export` the run, then --image FILE)",
        ),
    }
    for name, (ref, hint) in cases.items():
        copy = tmp_path / name
        shutil.copytree(recorded["run"], copy)
        (copy / "manifest.json").write_text(resealed({**m, "image": {**m["image"], "registry_ref": ref}}))
        proc = _replay(copy, tmp_path / f"{name}-replay")
        assert proc.returncode == EXIT_ENVIRONMENT, proc.stderr[-3000:]
        line = proc.stderr.strip().splitlines()[-1]
        assert line.startswith("runner: error: the recorded environment cannot be rebuilt exactly: base ")
        assert line.endswith(hint) or hint in line
        assert not (tmp_path / f"{name}-replay").exists()  # nothing was run

    imported = run_runner("import", str(recorded["file"]), module="runner.cli")
    assert imported.returncode == 0 and imported.stdout == f"{m['image']['id']}  {recorded['file']}\n"
    assert engine.image_id(m["image"]["tag"]) == m["image"]["id"]


def test_bad_input_is_one_line_and_writes_nothing(recorded, tmp_path):
    run_dir = recorded["run"]
    cases = [
        (["export", str(tmp_path / "none"), "-o", str(tmp_path / "x.tar")], "no manifest at"),
        (["export", str(run_dir), "-o", str(tmp_path)], "is a directory; name the file to write"),
        (["export", str(run_dir), "-o", str(tmp_path / "no" / "x.tar")], "is not a writable directory"),
        (["export", str(run_dir), "-o", str(run_dir / "outputs" / "x.tar")], "inside the run dir"),
        (["import", str(run_dir / "manifest.json")], "is not an image file (a docker-archive or OCI tar)"),
        (["import", str(run_dir / "code.tar")], "is a tar archive but no image"),
        (["import", str(tmp_path / "none.tar")], "no such image file"),
    ]
    for args, words in cases:
        proc = run_runner(*args, module="runner.cli")
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and proc.stdout == "", (args, proc.stderr)
        assert len(lines) == 1 and lines[0].startswith("runner: error: ") and words in lines[0], lines
    assert list(tmp_path.iterdir()) == []
