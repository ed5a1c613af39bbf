"""``runner init``: make the git repository you are in a runner project.

It writes what a project needs and nothing it already has: ``conf/config.yaml`` (the runner's
defaults, with the example as the default experiment), ``conf/experiment/example.yaml`` and the
script it runs, ``conf/experiment/example_lightning.yaml`` and its Lightning callable (the form
that uses ``from runner import current``), the image inputs (``Dockerfile.cpu``/``.cuda``,
``images/*.in`` listing the project's dependencies, ``images/*.lock`` as the runner ships them),
and ``runs/`` in ``.gitignore`` so run dirs stay out of the snapshot. Add a package to
``images/cpu.in``, run ``runner lock``, and the next run builds an image that holds it.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from runner.core.commands import COMMANDS
from runner.core.errors import EXIT_USAGE, RunnerError
from runner.host.project import builtin_dir, find_root

EXAMPLE_EXPERIMENT = """\
# @package _global_
# A plain script, run as it is: its working directory is the run's outputs/ (every file it writes
# there is hashed into the manifest); it gets RUNNER_SEED, RUNNER_DATA_DIR and RUNNER_WORLD_SIZE.
experiment:
  name: example
  target: null
  script: example_train.py   # relative to the project
  module: null               # or a module, run as `python -m module`
  launcher: python           # python | torchrun (DDP scripts reading LOCAL_RANK/RANK/WORLD_SIZE)
  nproc_per_node: null       # torchrun's processes; null: launch.processes
  args: [--steps, "20"]
"""

EXAMPLE_SCRIPT = '''\
"""An example training script: seeded, it writes weights.pt to its working directory."""

import argparse
import os

import torch

p = argparse.ArgumentParser()
p.add_argument("--steps", type=int, default=20)
args = p.parse_args()
torch.manual_seed(int(os.environ.get("RUNNER_SEED", "0")))
model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.05)
for step in range(args.steps):
    x = torch.randn(64, 16)
    loss = (model(x) - x.sum(dim=1, keepdim=True)).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
torch.save(model.state_dict(), "weights.pt")
print(f"{args.steps} steps, loss {loss.item():.4f}")
'''

EXAMPLE_LIGHTNING_EXPERIMENT = """\
# @package _global_
# A Lightning experiment: a callable the runner calls in each training process as train(cfg, run_dir);
# `from runner import current` gives it its run (rank, seed, paths, the Trainer's runner-owned kwargs).
experiment:
  name: example_lightning
  target: example_lightning:train   # module:function, importable from the project
  script: null
  module: null
  args: []
"""

EXAMPLE_LIGHTNING = '''\
"""An example Lightning experiment: the runner owns devices, DDP, determinism, fingerprints and
where logs go (``ctx.trainer_kwargs``); the experiment owns the model, the data and its metrics."""

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from runner import current


class Regression(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))

    def training_step(self, batch, _):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


def train(cfg, run_dir) -> dict:
    ctx = current()  # this process's run: rank, world size, seed, data files, paths
    g = torch.Generator().manual_seed(ctx.seed)
    x = torch.randn(1024, 16, generator=g)
    data = DataLoader(TensorDataset(x, x.sum(dim=1, keepdim=True)), batch_size=32)
    model = Regression()
    trainer = pl.Trainer(**ctx.trainer_kwargs(dict(cfg.trainer)))
    trainer.fit(model, train_dataloaders=data, ckpt_path=ctx.resume_checkpoint)
    ctx.save_weights(model.net)  # outputs/model.pt on rank 0: the run's headline hash
    return {"train_loss": float(trainer.callback_metrics["train_loss"]), "global_step": trainer.global_step}
'''

PROJECT_DEPS = "\n# Your project's dependencies (then `runner lock`):\n"
# Run dirs are written under the project by default: ignored, they stay out of the next snapshot.
IGNORED = ("runs/", "multirun/")


def scaffold(root: Path, builtin: Path) -> list[str]:
    """Write the project's files under ``root``; returns the ones written (existing files are kept)."""
    config = (
        (builtin / "conf" / "config.yaml")
        .read_text()
        .replace("experiment: mnist_ddp", "experiment: example", 1)
    )
    files: dict[str, str | Path] = {
        "conf/config.yaml": config,
        "conf/experiment/example.yaml": EXAMPLE_EXPERIMENT,
        "example_train.py": EXAMPLE_SCRIPT,
        "conf/experiment/example_lightning.yaml": EXAMPLE_LIGHTNING_EXPERIMENT,
        "example_lightning.py": EXAMPLE_LIGHTNING,
        "Dockerfile.cpu": builtin / "Dockerfile.cpu",
        "Dockerfile.cuda": builtin / "Dockerfile.cuda",
        "images/cpu.lock": builtin / "images" / "cpu.lock",
        "images/cuda.lock": builtin / "images" / "cuda.lock",
        "images/cpu.in": (builtin / "images" / "cpu.in").read_text().replace("`make lock`", "`runner lock`")
        + PROJECT_DEPS,
        "images/cuda.in": (builtin / "images" / "cuda.in").read_text().replace("`make lock`", "`runner lock`")
        + PROJECT_DEPS,
    }
    written = []
    for rel, content in files.items():
        target = root / rel
        if target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Path):
            shutil.copyfile(content, target)
        else:
            target.write_text(content)
        written.append(rel)
    if _ignore(root / ".gitignore", IGNORED):
        written.append(".gitignore")
    return written


def _ignore(gitignore: Path, patterns: tuple[str, ...]) -> bool:
    """Append the ``patterns`` a ``.gitignore`` lacks; True when it changed."""
    text = gitignore.read_text() if gitignore.is_file() else ""
    missing = [p for p in patterns if p not in text.splitlines()]
    if missing:
        gitignore.write_text(
            text + ("" if not text or text.endswith("\n") else "\n") + "\n".join(missing) + "\n"
        )
    return bool(missing)


def main(args: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="runner init", description=COMMANDS["init"])
    parser.parse_args(args)
    root = find_root()
    if root == builtin_dir():
        raise RunnerError(
            "runner init works in your project's git repository (run `git init` first)", EXIT_USAGE
        )
    written = scaffold(root, builtin_dir())
    for rel in written:
        print(f"  wrote {rel}")
    print(f"{root}: {len(written)} file(s) written; run `python -m runner experiment=example`")
    return 0
