"""Per-step fingerprints: the loss at every optimizer step and a parameter hash every K steps.

Two runs that should be identical can then be compared step by step, and the first step at
which they part is the place to look. One JSON object a line, written by rank 0 only (after
DDP's all-reduce every rank holds the same parameters).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pytorch_lightning import Callback


def params_sha256(module) -> str:
    """sha256 over every parameter's name, dtype, shape and raw bytes, in definition order."""
    h = hashlib.sha256()
    for name, p in module.named_parameters():
        t = p.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(-1).view(dtype=__import__("torch").uint8).numpy().tobytes())
    return h.hexdigest()


class Fingerprints(Callback):
    def __init__(self, path: Path, every_k: int = 10):
        self.path = Path(path)
        self.every_k = max(int(every_k), 0)
        self._file = None

    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            mode = "a" if trainer.global_step > 0 else "w"  # a resumed run continues its record
            self._file = open(self.path, mode, buffering=1)
            if trainer.global_step == 0:
                self._write({"step": 0, "params_sha256": params_sha256(pl_module)})

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._file is None:
            return
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        step = trainer.global_step
        rec = {"step": step, "loss": float(loss.detach().float().cpu()) if loss is not None else None}
        if self.every_k and step % self.every_k == 0:
            rec["params_sha256"] = params_sha256(pl_module)
        self._write(rec)

    def on_train_end(self, trainer, pl_module) -> None:
        if self._file is not None:
            self._write({"step": trainer.global_step, "final": True, "params_sha256": params_sha256(pl_module)})
            self._file.close()
            self._file = None

    def _write(self, rec: dict) -> None:
        self._file.write(json.dumps(rec, sort_keys=True) + "\n")


def read(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
