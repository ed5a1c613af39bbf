"""``python -m runner experiment=…``: compose the config with Hydra and run it.

This is an edge: a :class:`RunnerError` becomes one line on stderr and its exit status. Bad
overrides and unknown config options are caught before Hydra starts, with the options listed
on the same line. SIGTERM is Ctrl-C here (both stop the container and record the run as
interrupted, exit status 130). ``+resume=RUN_DIR`` continues a recorded run without Hydra
(:mod:`runner.flows.resume`).
"""

from __future__ import annotations

import sys
from pathlib import Path

from runner.core.errors import EXIT_INTERRUPTED, RunnerError
from runner.flows.cli_common import fail, validate_overrides
from runner.host.interrupts import sigterm_as_interrupt


def _refuse_held_run_dir(args: list[str]) -> None:
    """``hydra.run.dir=DIR`` naming a finished run: refuse before Hydra writes its files into it."""
    if any(a in ("-m", "--multirun") for a in args):
        return
    for a in args:
        key, _, value = a.partition("=")
        if key == "hydra.run.dir" and "${" not in value:
            from runner.host.rundir import refuse_held

            refuse_held(Path(value).resolve())


def _main(args: list[str]) -> None:
    from runner.flows import resume

    try:
        run_dir = resume.requested(args)
    except RunnerError as exc:
        fail(exc)
    if run_dir is not None:
        resume.main(args)
        return
    try:
        validate_overrides(args)
        _refuse_held_run_dir(args)
    except Exception as exc:  # noqa: BLE001 - any composition failure is the user's input
        fail(exc)
    from runner.flows.app import hydra_entry

    hydra_entry()


def main() -> None:
    sigterm_as_interrupt()
    try:
        _main(sys.argv[1:])
    except KeyboardInterrupt:  # outside a run's lifetime (composing, or after its record was written)
        fail(RunnerError("interrupted", EXIT_INTERRUPTED))


if __name__ == "__main__":
    main()
