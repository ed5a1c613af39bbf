"""A manifest carries the digest of its own content: an edit after the run shows, an old record
without one is read with a note, and replay refuses an edited record in one line."""

from __future__ import annotations

import json
import math

from runner.core import digests, manifest
from runner.flows import diff as diff_flow
from runner.host import records
from tests.conftest import run_runner
from tests.run_records import make_run, record


def _written(tmp_path, **over) -> dict:
    records.write_manifest(tmp_path, manifest.Manifest.model_validate(record(**over)))
    return json.loads((tmp_path / "manifest.json").read_text())


def test_written_manifest_records_the_digest_of_everything_else(tmp_path):
    raw = _written(tmp_path, metrics={"loss": math.nan, "acc": 0.5})  # NaN is written as null
    assert raw["digest"] == digests.record_digest(raw) and raw["digest"].startswith("sha256:")
    assert digests.check_digest(raw) == (False, None)
    loaded = records.load(tmp_path)
    assert not loaded.edited and loaded.digest_note is None


def test_one_changed_value_shows_as_an_edit(tmp_path):
    raw = _written(tmp_path)
    raw["environment"]["PYTHONHASHSEED"] = "1"
    (tmp_path / "manifest.json").write_text(json.dumps(raw, indent=4))  # layout alone does not matter
    loaded = records.load(tmp_path)
    assert loaded.edited and "was edited after its run" in loaded.digest_note
    raw["environment"]["PYTHONHASHSEED"] = "0"  # put back: the same content again, whatever the layout
    (tmp_path / "manifest.json").write_text(json.dumps(raw))
    assert not records.load(tmp_path).edited


def test_a_manifest_without_a_digest_is_accepted_with_a_note(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps(record()))
    loaded = records.load(tmp_path)
    assert not loaded.edited and "records no digest" in loaded.digest_note


def test_replay_refuses_an_edited_manifest_and_diff_flags_it(tmp_path):
    run = make_run(tmp_path / "run")
    raw = json.loads((run / "manifest.json").read_text())
    raw["digest"] = digests.record_digest(raw)
    raw["environment"]["PYTHONHASHSEED"] = "1"  # edited by hand after the digest was written
    (run / "manifest.json").write_text(json.dumps(raw))
    proc = run_runner(str(run), module="runner.replay", timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert (
        len(lines) == 1 and lines[0].startswith("runner: error: cannot replay: ") and "was edited" in lines[0]
    )
    assert not (run / "replays").exists()

    other = make_run(tmp_path / "other")  # an old record: no digest, a note only
    d = diff_flow.diff(str(run), str(other))
    assert d.notes[0].startswith("A: EDITED: ") and any(
        n.startswith("B: ") and "records no digest" in n for n in d.notes
    )
