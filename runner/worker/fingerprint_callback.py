"""The Lightning callback that writes ``fingerprints.jsonl`` (format: :mod:`runner.core.fingerprints`)."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

from pytorch_lightning import Callback

from runner.core.fingerprints import Row


def params_sha256(module) -> str:
    """sha256 over every parameter's name, dtype, shape and raw bytes, in definition order."""
    return _hash_params(_snapshot(module))


def _snapshot(module) -> list[tuple[str, Any]]:
    """Each parameter's name and a host copy of it, queued behind the work already on the device's
    stream: the copy holds the values after that work, whatever runs later. CUDA copies land in
    pinned memory without waiting for the device (:func:`_ready` waits for them)."""
    return [
        (name, p.detach().to("cpu", non_blocking=p.is_cuda, copy=True))
        for name, p in module.named_parameters()
    ]


def _hash_params(snapshot: list[tuple[str, Any]]) -> str:
    import torch

    h = hashlib.sha256()
    for name, t in snapshot:
        t = t.contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(-1).view(dtype=torch.uint8).numpy())  # hashlib reads the buffer, GIL released
    return h.hexdigest()


def _ready() -> Any:
    """An event recorded on the device's stream after the host copies just queued; None without
    CUDA (copies from CPU tensors are done when they return)."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        event = torch.cuda.Event()
        event.record()
        return event
    return None


class FingerprintWriter(Callback):
    """Rank 0 writes the loss of every step and a parameter hash every ``every_k`` steps.

    Reading parameters back makes the host wait for the device, and hashing them takes the host
    milliseconds while the device would sit idle: with a step of 10-20 ms that cost a multi-GPU
    step up to 2 ms on average (bench/README.md). So a flush only queues device→host copies behind
    the step's work and hands them to one background thread, which waits for them, hashes and
    writes the rows in order; training goes on meanwhile. The values are those after the step."""

    def __init__(self, path: Path, every_k: int = 10):
        self.path = Path(path)
        self.every_k = max(int(every_k), 0)
        self._file: IO[str] | None = None  # open from train start to train end, on rank 0
        self._pending: list = []
        self._writer: ThreadPoolExecutor | None = None
        self._queued: list[Future] = []

    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            if trainer.global_step > 0:  # a resumed run continues its record from the checkpoint's step
                _truncate_after(self.path, trainer.global_step)
            mode = "a" if trainer.global_step > 0 else "w"
            self._file = open(self.path, mode, buffering=1)  # noqa: SIM115 - closed in on_train_end
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="fingerprints")
            if trainer.global_step == 0:
                self._write({"step": 0, "params_sha256": params_sha256(pl_module)})

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._file is None:
            return
        # manual optimization's training_step may return nothing, or a dict without a loss
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if not hasattr(loss, "detach"):
            loss = None
        step = trainer.global_step
        # losses stay on the device until a flush: reading one back every step would stall the GPU
        self._pending.append((step, loss.detach() if loss is not None else None))
        if self.every_k and step % self.every_k == 0:
            self._flush(pl_module)
        elif len(self._pending) >= 200:
            self._flush()

    def on_train_end(self, trainer, pl_module) -> None:
        if self._file is not None:
            self._flush()
            self._drain()
            self._write(
                {"step": trainer.global_step, "final": True, "params_sha256": params_sha256(pl_module)}
            )
            self._file.close()
            self._file = None

    def on_exception(self, trainer, pl_module, exception) -> None:
        """Training stopped (an interrupt, an error): the rows already flushed are written before
        the process ends, as a checkpoint's resume expects them; the error in hand stays the one raised."""
        if self._file is not None:
            with contextlib.suppress(Exception):  # the steps trained since the last flush, too
                self._flush()
            self._drain(raise_errors=False)
            self._file.close()
            self._file = None

    def _flush(self, module=None) -> None:
        """Queue the pending losses (and the parameters, given the module) for the writer thread."""
        pending, self._pending = self._pending, []
        losses = [
            (step, loss.float().to("cpu", non_blocking=loss.is_cuda, copy=True) if loss is not None else None)
            for step, loss in pending
        ]
        snapshot = _snapshot(module) if module is not None else None
        event = _ready()
        assert self._writer is not None, "flushes happen between train start and train end"
        still = []
        for f in self._queued:  # one look at each: a flush that ends meanwhile is checked next time
            if f.done():
                f.result()  # an error the writer thread met stops training here
            else:
                still.append(f)
        self._queued = [*still, self._writer.submit(self._write_rows, losses, snapshot, event)]

    def _write_rows(self, losses: list, snapshot: list | None, event: Any) -> None:
        if event is not None:
            event.synchronize()
        last = _hash_params(snapshot) if snapshot is not None else None
        for n, (step, loss) in enumerate(losses):
            rec: Row = {"step": step, "loss": float(loss) if loss is not None else None}
            if last is not None and n == len(losses) - 1:
                rec["params_sha256"] = last
            self._write(rec)

    def _drain(self, raise_errors: bool = True) -> None:
        """Wait for the writer thread; an error it met is raised here unless ``raise_errors`` is off."""
        assert self._writer is not None
        self._writer.shutdown(wait=True)
        queued, self._queued = self._queued, []
        if raise_errors:
            for f in queued:
                f.result()

    def _write(self, rec: Row) -> None:
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
