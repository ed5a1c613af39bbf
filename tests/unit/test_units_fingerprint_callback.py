"""The fingerprint callback: rows in step order, parameter hashes of the values after their step,
although the copies are hashed and written on a background thread while training goes on."""

from __future__ import annotations

import hashlib
import json
import time
from types import SimpleNamespace

import pytest
import torch

from runner.worker.fingerprint_callback import FingerprintWriter, params_sha256


def _reference_sha256(module) -> str:
    """The parameter hash as a plain synchronous loop writes it (the format runs recorded)."""
    h = hashlib.sha256()
    for name, p in module.named_parameters():
        t = p.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(-1).view(dtype=torch.uint8).numpy().tobytes())
    return h.hexdigest()


def test_rows_hold_each_steps_loss_and_the_parameters_after_it(tmp_path):
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.Flatten(), torch.nn.Linear(3, 2))
    trainer = SimpleNamespace(is_global_zero=True, global_step=0)
    cb = FingerprintWriter(tmp_path / "fp.jsonl", every_k=2)
    cb.on_train_start(trainer, module)
    expected = {0: _reference_sha256(module)}
    for step in range(1, 8):
        with torch.no_grad():
            for p in module.parameters():
                p.add_(0.5 * step)
        trainer.global_step = step
        expected[step] = _reference_sha256(module)
        cb.on_train_batch_end(trainer, module, {"loss": torch.tensor(step / 3)}, step, step - 1)
        with torch.no_grad():  # the next step changes the parameters before the writer hashes them
            for p in module.parameters():
                p.mul_(-1)
    cb.on_train_end(trainer, module)

    rows = [json.loads(line) for line in (tmp_path / "fp.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4, 5, 6, 7, 7]
    assert rows[-1]["final"] and rows[-1]["params_sha256"] == _reference_sha256(module)
    hashed = {r["step"]: r["params_sha256"] for r in rows[:-1] if "params_sha256" in r}
    assert hashed == {s: expected[s] for s in (0, 2, 4, 6)}
    assert [r["loss"] for r in rows[1:-1]] == [float(torch.tensor(s / 3)) for s in range(1, 8)]
    assert cb._file is None


def test_a_step_that_returns_no_loss_is_a_row_without_one(tmp_path):
    """Manual optimization: ``training_step`` may return nothing (Lightning hands the callback
    ``{}``), a dict without a loss, or the loss itself."""
    module = torch.nn.Linear(2, 1)
    trainer = SimpleNamespace(is_global_zero=True, global_step=0)
    cb = FingerprintWriter(tmp_path / "fp.jsonl", every_k=1)
    cb.on_train_start(trainer, module)
    for step, out in enumerate(({}, None, {"acc": 0.5}, torch.tensor(0.25)), 1):
        trainer.global_step = step
        cb.on_train_batch_end(trainer, module, out, step, step - 1)
    cb.on_train_end(trainer, module)
    rows = [json.loads(line) for line in (tmp_path / "fp.jsonl").read_text().splitlines()]
    assert [r.get("loss") for r in rows[1:5]] == [None, None, None, 0.25]
    assert [r["step"] for r in rows[1:5]] == [1, 2, 3, 4]


def test_the_parameter_hash_does_not_depend_on_memory_format():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 8, 3)
    before = params_sha256(conv)
    assert before == _reference_sha256(conv)
    assert params_sha256(conv.to(memory_format=torch.channels_last)) == before


def test_rows_flushed_before_an_interrupt_are_written_and_the_file_closed(tmp_path):
    """An interrupt ends the process without interpreter finalisation: what the writer thread holds
    must be on disk before on_exception returns (a resume keeps the rows up to its checkpoint)."""
    module = torch.nn.Linear(3, 2)
    trainer = SimpleNamespace(is_global_zero=True, global_step=0)
    cb = FingerprintWriter(tmp_path / "fp.jsonl", every_k=2)
    cb.on_train_start(trainer, module)
    for step in (1, 2, 3):
        trainer.global_step = step
        cb.on_train_batch_end(trainer, module, {"loss": torch.tensor(1.0)}, step, step - 1)
    cb.on_exception(trainer, module, KeyboardInterrupt())
    rows = [json.loads(line) for line in (tmp_path / "fp.jsonl").read_text().splitlines()]
    # step 3, not yet due for a flush, is written too: a resume from a checkpoint at step 3 (a run
    # killed outright, whose rows lag its checkpoints) needs its row; a later resume drops it
    assert [r["step"] for r in rows] == [0, 1, 2, 3] and rows[-1]["loss"] == 1.0
    assert rows[2]["params_sha256"] == _reference_sha256(module) and "params_sha256" not in rows[-1]
    assert cb._file is None


def _failing_run(tmp_path):
    """A writer whose third step's row cannot be written: that loss is no scalar, so the writer
    thread's ``float(loss)`` fails (as a full disk would fail its write)."""
    module = torch.nn.Linear(3, 2)
    trainer = SimpleNamespace(is_global_zero=True, global_step=0)
    cb = FingerprintWriter(tmp_path / "fp.jsonl", every_k=1)
    cb.on_train_start(trainer, module)
    for step in (1, 2):
        trainer.global_step = step
        cb.on_train_batch_end(trainer, module, {"loss": torch.tensor(0.5)}, step, step - 1)
    trainer.global_step = 3
    cb.on_train_batch_end(trainer, module, {"loss": torch.tensor([0.5, 0.5])}, 3, 2)
    return cb, trainer, module


def _steps(path) -> list[int]:
    return [json.loads(line)["step"] for line in path.read_text().splitlines()]


def test_an_error_on_the_writer_thread_stops_training_at_a_later_flush(tmp_path):
    cb, trainer, module = _failing_run(tmp_path)
    with pytest.raises((RuntimeError, ValueError), match="element"):
        for step in range(4, 400):  # each step flushes; the failed flush is seen once it has ended
            trainer.global_step = step
            cb.on_train_batch_end(trainer, module, {"loss": torch.tensor(0.5)}, step, step - 1)
            time.sleep(0.01)
    cb.on_exception(trainer, module, RuntimeError("stopped"))  # what Lightning calls next
    assert cb._file is None
    assert _steps(tmp_path / "fp.jsonl")[:3] == [0, 1, 2]  # the rows before the failure are on disk


def test_an_error_on_the_writer_thread_is_raised_at_train_end_not_lost(tmp_path):
    cb, trainer, module = _failing_run(tmp_path)
    with pytest.raises((RuntimeError, ValueError), match="element"):
        cb.on_train_end(trainer, module)  # waits for the writer: its error cannot be missed
    assert "final" not in (tmp_path / "fp.jsonl").read_text()  # no final row claims a whole record
    cb.on_exception(trainer, module, RuntimeError("stopped"))
    assert cb._file is None and _steps(tmp_path / "fp.jsonl") == [0, 1, 2]
