"""``python -m runner experiment=…``: compose the config with Hydra and run it.

This is an edge: a :class:`RunnerError` becomes one line on stderr and its exit status. Bad
overrides and unknown config options are caught before Hydra starts, with the options listed
on the same line.
"""

from __future__ import annotations

import signal
import sys

from runner.cli_common import fail, validate_overrides


def _sigterm_as_interrupt(_signum, _frame):
    raise KeyboardInterrupt


def main() -> None:
    args = sys.argv[1:]
    try:
        validate_overrides(args)
    except Exception as exc:  # noqa: BLE001 - any composition failure is the user's input
        fail(exc)
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    from runner.app import hydra_entry

    hydra_entry()


if __name__ == "__main__":
    main()
