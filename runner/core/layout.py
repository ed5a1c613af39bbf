"""A run dir's file names, spelt once. The host, the worker and every reader of a run dir use these.

::

    RUN_DIR/
      manifest.json        MANIFEST          the record (written last, whole or not at all)
      code.tar             CODE_ARCHIVE      the source the run used
      job.json             WORKER_REQUEST    what the worker is told: paths, config, seed, world size
      result.json          RESULT            what the worker reports: metrics, library and device facts
      fingerprints.jsonl   FINGERPRINTS      loss every step, parameter hash every K steps
      outputs/             OUTPUTS_DIR       what the experiment wrote; every file is hashed
      checkpoints/         CHECKPOINT_DIR    step-NNNNNNNN.ckpt, for +resume=RUN_DIR
      logs/train.log       LOGS_DIR/TRAIN_LOG
      logs/build.log       LOGS_DIR/BUILD_LOG (only when this run built its image)
      metrics/             METRICS_DIR       Lightning's CSV logger
      replays/<time>/      REPLAYS_DIR       replays of this run, each a run dir of its own
      verdict.json         VERDICT           in a replay's run dir: the comparison with the original
      provenance.intoto.jsonl  PROVENANCE    the run's signed SLSA provenance (runner verify)
      verification.intoto.jsonl VERIFICATION in a replay's run dir: its signed verdict (a SLSA VSA)
      nodes.json           NODE_REQUEST      a multi-node run's container, for each node's agent
      logs/node-K.log      NODE_LOG          what node K's container printed (a multi-node run)
      logs/node-K.end.json NODE_END          how node K's container ended (exit, OOM, port taken)
      .runner.claim        CLAIM             held (flock) while a runner owns the dir
      .runner.reserve      RESERVE           space kept for the final record while the run lasts
      .runner.reserve.1    RESERVE + ".1"    an inode kept for the final record's second file
"""

from __future__ import annotations

import re
from pathlib import Path

MANIFEST = "manifest.json"
CODE_ARCHIVE = "code.tar"
WORKER_REQUEST = "job.json"
RESULT = "result.json"
FINGERPRINTS = "fingerprints.jsonl"
OUTPUTS_DIR = "outputs"
CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_TEMPLATE = (
    "step-{step:08d}"  # Lightning ModelCheckpoint's filename (+ ".ckpt"): names sort by step
)
LOGS_DIR = "logs"
TRAIN_LOG = "train.log"
BUILD_LOG = "build.log"
METRICS_DIR = "metrics"
REPLAYS_DIR = "replays"
VERDICT = "verdict.json"
PROVENANCE = "provenance.intoto.jsonl"
VERIFICATION = "verification.intoto.jsonl"
NODE_REQUEST = "nodes.json"
NODE_LOG = "node-{node}.log"  # under LOGS_DIR
NODE_END = "node-{node}.end.json"  # under LOGS_DIR: how node K's container ended (cluster.NodeEnd)
CLAIM = ".runner.claim"
RESERVE = ".runner.reserve"
# The dirs the container's unprivileged user writes into (the run dir itself too).
WRITABLE_DIRS = (OUTPUTS_DIR, LOGS_DIR, METRICS_DIR, CHECKPOINT_DIR)
_CHECKPOINT_NAME = re.compile(r"^step-(\d{8})\.ckpt$")  # CHECKPOINT_TEMPLATE + ".ckpt"


def latest_checkpoint(checkpoint_dir: Path, at_most: int | None = None) -> tuple[int, Path] | None:
    """The newest checkpoint in ``checkpoint_dir`` (of a step ``at_most``, when given) as (global
    step, path), or None when there is none.
    Reads the directory, writes nothing: the worker (resuming) and the host (``+resume``) both ask.

    Lightning writes each one atomically (temp file, then rename), so a matching name is a whole file.
    """
    found = []
    if checkpoint_dir.is_dir():
        for p in checkpoint_dir.iterdir():
            m = _CHECKPOINT_NAME.match(p.name)
            if m and p.is_file() and not p.is_symlink() and (at_most is None or int(m.group(1)) <= at_most):
                found.append((int(m.group(1)), p))
    return max(found) if found else None
