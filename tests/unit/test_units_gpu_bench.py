"""bench/gpu_determinism.py's tables: a second table keeps to its own markers."""

from __future__ import annotations

from bench.gpu_determinism import BEGIN, END, summarise, write_table


def _doc(sps: float) -> dict:
    run = {
        "workload": "mnist_ddp",
        "gpus": 1,
        "profile": "strict",
        "precision": "bf16",
        "exit_code": 0,
        "samples_per_s": sps,
        "outputs": {"model.pt": "a"},
        "fingerprints_sha256": "f",
    }
    return {
        "summary": summarise([run]),
        "machine": {"gpus": ["H100"]},
        "settings": {"steps": 100, "repeats": 1},
        "out": "x.json",
    }


def test_a_table_with_an_id_goes_between_its_own_markers_and_leaves_the_main_one(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{BEGIN}\nmain\n{END}\nmiddle\n")
    write_table(_doc(1_500_000), readme, "second")
    write_table(_doc(2_500_000), readme, "second")  # rewritten in place, not appended again
    text = readme.read_text()
    assert f"{BEGIN}\nmain\n{END}\nmiddle\n" in text
    assert text.count("<!-- gpu-table:second:begin -->") == 1
    assert "2,500k" in text and "1,500k" not in text
    write_table(_doc(3_000_000), readme)
    assert "main" not in readme.read_text() and "2,500k" in readme.read_text()
