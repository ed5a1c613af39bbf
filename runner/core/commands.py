"""The runner's commands and the one line that describes each, spelt once.

``runner --help`` (:mod:`runner.cli`), each command's own ``--help`` (its ``build_parser()``) and the
Hydra help page (``conf/hydra/help/runner.yaml``, checked against this table by tests/e2e/test_help.py)
all show these words. A new command (audit, init, lock, …) is one more entry here.
"""

from __future__ import annotations

COMMANDS: dict[str, str] = {
    "run": "compose a config with Hydra and run it (same as `python -m runner`)",
    "replay": "re-run a recorded run from its manifest and verify it bit for bit",
    "diff": "show what differs between two runs",
    "summary": "rebuild a sweep's summary.json and summary.png from its run dirs",
    "init": "scaffold a project in this git repository: conf/, an example, image inputs",
    "lock": "hash-pinned image locks from the project's images/*.in (pip-compile)",
    "verify": "check a run's signed provenance against its files (and list its signed replays)",
    "keygen": "write an Ed25519 key pair to sign runs with",
    "ls": "the runs under a directory: status, seed, metrics, replay verdicts, digest",
    "audit": "the determinism audit alone: one step, naming nondeterministic operations",
    "export": "a run's image as one reproducible file (docker-archive, oci or squashfs) and its sha256; "
    "`export mlflow PATH…`: runs into MLflow",
    "import": "load an image file (docker-archive or oci) into the engine; print the image id it holds",
}
