"""The Lightning callback that writes ``fingerprints.jsonl`` (format: :mod:`runner.core.fingerprints`)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import IO

from pytorch_lightning import Callback


def params_sha256(module) -> str:
    """sha256 over every parameter's name, dtype, shape and raw bytes, in definition order."""
    import torch

    h = hashlib.sha256()
    for name, p in module.named_parameters():
        t = p.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(-1).view(dtype=torch.uint8).numpy().tobytes())
    return h.hexdigest()


class Fingerprints(Callback):
    def __init__(self, path: Path, every_k: int = 10):
        self.path = Path(path)
        self.every_k = max(int(every_k), 0)
        self._file: IO[str] | None = None  # open from train start to train end, on rank 0
        self._pending: list = []

    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            if trainer.global_step > 0:  # a resumed run continues its record from the checkpoint's step
                _truncate_after(self.path, trainer.global_step)
            mode = "a" if trainer.global_step > 0 else "w"
            self._file = open(self.path, mode, buffering=1)  # noqa: SIM115 - closed in on_train_end
            if trainer.global_step == 0:
                self._write({"step": 0, "params_sha256": params_sha256(pl_module)})

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._file is None:
            return
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        step = trainer.global_step
        # losses stay on the device until a flush: reading one back every step would stall the GPU
        self._pending.append((step, loss.detach() if loss is not None else None))
        if self.every_k and step % self.every_k == 0:
            self._flush(params_sha256(pl_module))
        elif len(self._pending) >= 200:
            self._flush()

    def on_train_end(self, trainer, pl_module) -> None:
        if self._file is not None:
            self._flush()
            self._write(
                {"step": trainer.global_step, "final": True, "params_sha256": params_sha256(pl_module)}
            )
            self._file.close()
            self._file = None

    def _flush(self, last_params: str | None = None) -> None:
        pending, self._pending = self._pending, []
        for n, (step, loss) in enumerate(pending):
            rec = {"step": step, "loss": float(loss.float().cpu()) if loss is not None else None}
            if last_params is not None and n == len(pending) - 1:
                rec["params_sha256"] = last_params
            self._write(rec)

    def _write(self, rec: dict) -> None:
        assert self._file is not None, "rows are written between train start and train end"
        self._file.write(json.dumps(rec, sort_keys=True) + "\n")


def _truncate_after(path: Path, step: int) -> None:
    """Drop the rows an interrupted run wrote after ``step`` (they are trained again), atomically."""
    if not path.is_file():
        return
    keep = [
        line
        for line in path.read_text().splitlines(keepends=True)
        if line.strip() and _row_step(line) <= step
    ]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(keep))
    tmp.replace(path)


def _row_step(line: str) -> float:
    try:
        rec = json.loads(line)
    except json.JSONDecodeError:  # a line cut short by the interrupt
        return float("inf")
    return float("inf") if rec.get("final") else rec.get("step", float("inf"))
