"""``runner diff A B --plot FILE.png``: the picture decodes, has the size asked for, and its red line
stands at the step diff reports. Hand-made records whose fingerprints part at step 6 of 10 (the
same on real runs: tests/e2e/test_cause.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from runner.core.digests import sha256_bytes
from runner.host import diff_plot
from tests.conftest import run_runner
from tests.run_records import make_run


def _rows(part_at: int | None) -> list[dict]:
    rows = [{"step": 0, "params_sha256": "p0"}]
    for step in range(1, 11):
        late = part_at is not None and step >= part_at
        row = {"step": step, "loss": 2.0 / step + (0.05 * (step - part_at + 1) if late else 0.0)}
        if step % 2 == 0:
            row["params_sha256"] = f"p{step}" + ("x" if part_at is not None and step >= part_at else "")
        rows.append(row)
    return rows


def _run(path: Path, part_at: int | None) -> Path:
    text = "".join(json.dumps(r) + "\n" for r in _rows(part_at))
    fp = {
        "file": "fingerprints.jsonl",
        "sha256": sha256_bytes(text.encode()),
        "every_k_steps": 2,
        "steps": 10,
    }
    run = make_run(path, fingerprints=fp)
    (run / "fingerprints.jsonl").write_text(text)
    return run


def marked_column(png: Path) -> tuple[int, int]:
    """The pixel column holding the most pixels of the divergence colour, and how many it holds."""
    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
    red = tuple(int(diff_plot.DIVERGENCE_COLOUR[i : i + 2], 16) for i in (1, 3, 5))
    hits = (np.abs(rgb - np.array(red)).sum(axis=2) <= 30).sum(axis=0)
    return int(hits.argmax()), int(hits.max())


def expected_column(png: Path, step: int) -> float:
    x0, x1, px0, px1 = map(float, Image.open(png).text["runner:x_axis"].split())
    return px0 + (step - x0) / (x1 - x0) * (px1 - px0)


def test_the_plot_marks_the_step_diff_reports(tmp_path):
    a, b = _run(tmp_path / "a", None), _run(tmp_path / "b", 6)
    proc = run_runner(str(a), str(b), "--json", module="runner.diff")
    step = json.loads(proc.stdout)["first_divergence"]["step"]
    assert proc.returncode == 1 and step == 6, proc.stdout

    png = tmp_path / "parted.png"
    proc = run_runner(str(a), str(b), "--plot", str(png), "--plot-size", "800x500", module="runner.diff")
    assert proc.returncode == 1, proc.stderr
    image = Image.open(png)
    image.load()  # decodes the whole image
    assert image.format == "PNG" and image.size == (800, 500)
    assert image.text["runner:first_divergence_step"] == str(step)
    column, height = marked_column(png)
    assert abs(column - expected_column(png, step)) <= 2 and height > 200, (column, height)


def test_runs_that_agree_draw_no_divergence_line(tmp_path):
    a, b = _run(tmp_path / "a", None), _run(tmp_path / "b", None)
    png = tmp_path / "same.png"
    proc = run_runner(str(a), str(b), "--plot", str(png), module="runner.diff")
    assert proc.returncode == 0, proc.stderr
    image = Image.open(png)
    assert image.size == (1000, 600) and "runner:first_divergence_step" not in image.text
    assert marked_column(png)[1] < 20  # no red line (the legend has none either)


def test_plot_refuses_a_run_without_fingerprints_and_a_bad_size_in_one_line(tmp_path):
    a, bare = _run(tmp_path / "a", None), make_run(tmp_path / "bare")
    proc = run_runner(str(a), str(bare), "--plot", str(tmp_path / "x.png"), module="runner.diff")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("runner: error: --plot: run B has no per-step record to draw")
    assert not (tmp_path / "x.png").exists()
    proc = run_runner(str(a), str(a), "--plot", "x.png", "--plot-size", "big", module="runner.diff")
    assert proc.returncode == 2 and "is not WIDTHxHEIGHT" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_runner(str(a), str(a), "--plot-size", "800x500", module="runner.diff")  # a size, no plot
    assert proc.returncode == 2 and proc.stderr.strip().endswith("error: --plot-size needs --plot FILE.png")


@pytest.mark.parametrize("suffix", ["svg", "pdf"])
def test_the_plot_is_written_in_the_format_its_suffix_names(tmp_path, suffix):
    a, b = _run(tmp_path / "a", None), _run(tmp_path / "b", 6)
    out = tmp_path / f"parted.{suffix}"
    proc = run_runner(str(a), str(b), "--plot", str(out), module="runner.diff")
    assert proc.returncode == 1, proc.stderr
    head = out.read_bytes()[:200]
    assert head.startswith(b"%PDF") if suffix == "pdf" else b"<svg" in out.read_bytes()[:2000], head


def test_a_plot_in_another_format_is_refused_in_one_line(tmp_path):
    a = _run(tmp_path / "a", None)
    proc = run_runner(str(a), str(a), "--plot", str(tmp_path / "x.jpg"), module="runner.diff")
    assert proc.returncode == 2 and "written as .png, .svg or .pdf" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "x.jpg").exists()
