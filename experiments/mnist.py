"""mnist_ddp: a small CNN on MNIST-format IDX data with PyTorch Lightning and DDP.

The data set is small enough to live in memory (on the GPU when there is one), so batches are
index tensors into it instead of samples collated by DataLoader workers: each epoch a seeded
permutation is split between the ranks, and a step gathers its batch with one indexing op.
"""

from __future__ import annotations

import gzip
import struct
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Sampler

from runner import RunContext


def read_idx(path: Path) -> torch.Tensor:
    """An IDX file (optionally gzipped) as a uint8 tensor of its declared shape."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    return torch.frombuffer(bytearray(raw[4 + 4 * ndim :]), dtype=torch.uint8).reshape(shape)


def epoch_permutation(seed: int, epoch: int, n: int, pin: bool = False) -> torch.Tensor:
    """The order of the training set in one epoch: a permutation seeded by (seed, epoch) only,
    so it does not depend on the world size, the device or how the run was resumed. ``pin``: made
    in page-locked memory, so that its copy to a GPU is queued without waiting."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g, out=torch.empty(n, dtype=torch.int64, pin_memory=pin))


def _on_one_thread(seed: int, epoch: int, n: int, pin: bool) -> torch.Tensor:
    """``epoch_permutation`` with torch's intra-op pool at one thread on the calling thread: randperm
    fills its 60k indices in parallel, and on a host of many cores, under a profile that leaves the
    pool at its default size, that woke a team of threads as large as the host for each shuffle."""
    threads = torch.get_num_threads()
    if threads == 1:
        return epoch_permutation(seed, epoch, n, pin)
    torch.set_num_threads(1)
    try:
        return epoch_permutation(seed, epoch, n, pin)
    finally:
        torch.set_num_threads(threads)


class Permutations:
    """Each epoch's permutation on the training device. For a GPU it is made on a helper thread while
    the epoch before trains, pinned, so the training thread waits for a shuffle (about a millisecond
    for 60k indices) only when an epoch is shorter than one. On a CPU it is made on the training
    thread, which torch's thread settings belong to, beside steps far longer than a shuffle. The bits
    are ``epoch_permutation``'s either way. Made on the helper thread, the shuffle is outside the
    step's thread, so the audit's watch of the step's operations does not list it there.
    Measurements: bench/README.md."""

    def __init__(self, seed: int, n: int):
        self.seed, self.n = seed, n
        # started by the first epoch: a model that is built but not trained (the audit process's,
        # a test's) starts no thread
        self._pool: ThreadPoolExecutor | None = None
        self._ahead: dict[int, Future] = {}

    def _start(self, epoch: int, pin: bool) -> Future:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="epoch-permutation")
        return self._pool.submit(_on_one_thread, self.seed, epoch, self.n, pin)

    def get(self, epoch: int, device: torch.device) -> torch.Tensor:
        """This epoch's permutation on ``device``: to a GPU, made ahead and copied without a sync."""
        if device.type != "cuda":
            return _on_one_thread(self.seed, epoch, self.n, False)
        return self.made_ahead(epoch, pin=True).to(device, non_blocking=True)

    def made_ahead(self, epoch: int, pin: bool) -> torch.Tensor:
        """This epoch's permutation from the helper thread, which then starts the next epoch's. A
        resume that jumps to another epoch gets that one made fresh."""
        perm = (self._ahead.pop(epoch, None) or self._start(epoch, pin)).result()
        self._ahead = {epoch + 1: self._start(epoch + 1, pin)}
        return perm

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool, self._ahead = None, {}


class EpochBatches(Sampler):
    """Batch numbers of an epoch. Each epoch's permutation is cut into world_size × batch_size
    blocks; rank r's batch i is the r-th slice of block i. The module turns the number into
    indices on its own device, so no sample (and no index tensor) is collated or copied per step.
    ``resume_at`` makes the next pass start mid-epoch, where an interrupted run stopped."""

    def __init__(self, n: int, batch_size: int, world: int):
        self.n, self.bs, self.world = n, batch_size, world
        self._skip = 0  # batches of the next pass already trained before a resume

    def resume_at(self, epoch: int, batches_done: int) -> None:
        # a checkpoint taken on an epoch's last batch: Lightning moves on, the next epoch starts whole
        self._skip = batches_done if batches_done < len(self) else 0

    def __len__(self) -> int:
        # the whole epoch, also on a resumed pass: Lightning counts the batches trained before the
        # checkpoint towards it (its fetcher starts at their number), so a shorter length cuts the epoch
        return self.n // (self.bs * self.world)

    def __iter__(self):
        start, self._skip = self._skip, 0
        return iter(range(start, len(self)))


class _Identity(torch.utils.data.Dataset):
    def __getitem__(self, i):
        return i


class Throughput(pl.Callback):
    """Steady-state samples per second over the whole world, from step ``warmup`` to the end
    (device synchronised at both ends, so queued GPU work is counted)."""

    def __init__(self, global_batch: int, warmup: int = 5):
        self.global_batch, self.warmup = global_batch, warmup
        self.t0, self.step0, self.samples_per_s = None, None, None

    def _sync(self, module) -> float:
        import time

        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)
        return time.perf_counter()

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if self.t0 is None and trainer.global_step >= self.warmup:
            self.t0, self.step0 = self._sync(module), trainer.global_step

    def on_train_end(self, trainer, module) -> None:
        if self.t0 is not None and trainer.global_step > self.step0:
            seconds = self._sync(module) - self.t0
            self.samples_per_s = (trainer.global_step - self.step0) * self.global_batch / seconds


class MnistCNN(pl.LightningModule):
    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        channels=16,
        hidden=64,
        lr=0.05,
        momentum=0.9,
        dropout=0.0,
        batch_size=64,
        seed=0,
        rank=0,
        world=1,
        mean=0.0,
        std=1.0,
        channels_last=False,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["images", "labels"])
        self._perm_epoch, self._perm = None, None
        self._permutations = Permutations(seed, len(images))
        self.net = self.build_net(channels, hidden, dropout)
        if channels_last:  # weights NHWC; normalise() gives the images the same layout
            self.net = self.net.to(memory_format=torch.channels_last)
        # the data goes to the module's device when training starts (on_fit_start). Not a buffer: DDP
        # would broadcast every buffer from rank 0 before every step (47 MB here), for data each rank has
        self.images, self.labels = images, labels

    def build_net(self, channels: int, hidden: int, dropout: float) -> nn.Module:
        """The network a subclass swaps in; the data, batching and training loop stay the same."""
        c = channels
        # stride-2 convolutions instead of max-pooling: deterministic backward on every device
        return nn.Sequential(
            nn.Conv2d(1, c, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(c, 2 * c, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(2 * c * 7 * 7, hidden),
            nn.ReLU(),
            *([nn.Dropout(dropout)] if dropout else []),  # draws from torch's RNG every step
            nn.Linear(hidden, 10),
        )

    def forward(self, x):
        return self.net(x)

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 images → float, one channel, standardised with the data set's mean and std; laid out
        NHWC (``torch.channels_last``) when the model is."""
        x = pixels.unsqueeze(1).float().div_(255.0).sub_(self.hparams.mean).div_(self.hparams.std)
        return x.contiguous(memory_format=torch.channels_last) if self.hparams.channels_last else x

    def on_fit_start(self) -> None:
        self.images, self.labels = self.images.to(self.device), self.labels.to(self.device)

    def on_fit_end(self) -> None:
        self._permutations.close()

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        return batch  # a batch is a batch number; the data is on the device already

    def indices(self, i: int) -> torch.Tensor:
        """Indices of this rank's batch ``i`` of the current epoch, on the module's device."""
        hp = self.hparams
        if self._perm_epoch != self.current_epoch:  # one host→device copy per epoch, queued without a sync
            self._perm = self._permutations.get(self.current_epoch, self.images.device)
            self._perm_epoch = self.current_epoch
        start = (int(i) * hp.world + hp.rank) * hp.batch_size
        return self._perm[start : start + hp.batch_size]

    def batch(self, i: int):
        idx = self.indices(i)
        x = self.normalise(self.images.index_select(0, idx))
        return x, self.labels.index_select(0, idx).long()

    def training_step(self, i, batch_idx):
        x, y = self.batch(i)
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, prog_bar=False)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=self.hparams.momentum)

    @torch.no_grad()
    def evaluate(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> dict:
        self.eval()
        correct, loss_sum = 0, 0.0
        for i in range(0, len(images), batch_size):
            x = self.normalise(images[i : i + batch_size].to(self.device))
            y = labels[i : i + batch_size].to(self.device).long()
            out = self(x)
            loss_sum += float(F.cross_entropy(out, y, reduction="sum"))
            correct += int((out.argmax(1) == y).sum())
        return {"test_loss": loss_sum / len(images), "test_acc": correct / len(images)}


def pixel_stats(stats, images: torch.Tensor) -> dict:
    """Mean and std for normalisation: the data set config's, else computed from the images."""
    if stats:
        return {"mean": float(stats["mean"]), "std": float(stats["std"])}
    pixels = images.double().div(255.0)
    return {"mean": float(pixels.mean()), "std": float(pixels.std())}


def train(cfg, run_dir: Path, model_cls: type[MnistCNN] | None = None) -> dict:
    """Train on the whole-data-on-device pipeline; ``model_cls`` swaps the network (default MnistCNN)."""
    ctx = RunContext.current()
    files = ctx.data_files
    images, labels = read_idx(files["train_images"]), read_idx(files["train_labels"])
    n = cfg.model.train_samples or len(images)
    images, labels = images[:n].contiguous(), labels[:n].contiguous()

    bs = int(cfg.model.batch_size)
    model = (model_cls or MnistCNN)(
        images,
        labels,
        **{k: cfg.model[k] for k in ("channels", "hidden", "lr", "momentum")},
        dropout=float(cfg.model.get("dropout") or 0.0),
        # absent from runs recorded before the option: they trained NCHW, and replay so
        channels_last=bool(cfg.model.get("channels_last") or False),
        batch_size=bs,
        seed=ctx.seed,
        rank=ctx.rank,
        world=ctx.world_size,
        **pixel_stats(cfg.dataset.get("stats"), images),
    )
    sampler = EpochBatches(n, bs, ctx.world_size)
    loader = DataLoader(_Identity(), sampler=sampler, batch_size=None, num_workers=0)

    kwargs = ctx.trainer_kwargs(dict(cfg.trainer), samplers=[sampler])
    kwargs["use_distributed_sampler"] = False  # EpochBatches already gives each rank its share
    throughput = Throughput(bs * ctx.world_size)
    kwargs["callbacks"].append(throughput)
    trainer = pl.Trainer(**kwargs)
    trainer.fit(model, train_dataloaders=loader, ckpt_path=ctx.resume_checkpoint)

    metrics = {
        "train_loss": float(trainer.callback_metrics.get("train_loss", float("nan"))),
        "global_step": trainer.global_step,
    }
    if throughput.samples_per_s:
        metrics["samples_per_s"] = throughput.samples_per_s
    if ctx.is_main:
        ctx.save_weights(model.net)  # from the CPU, where fit's teardown left the module
        model.to(trainer.strategy.root_device)  # the test set is scored where the model trained
        metrics.update(model.evaluate(read_idx(files["test_images"]), read_idx(files["test_labels"])))
    return metrics
