"""The ``runner`` console script: one entry for every command.

    runner run experiment=mnist_ddp seed=3     # exactly `python -m runner …` (Hydra overrides, -m sweeps)
    runner replay RUN_DIR [--out DIR] [--allow-env-drift] [--json]
    runner diff RUN_A RUN_B [--json]
    runner summary SWEEP_DIR …
    runner verify RUN_DIR [--key PUB | --allowed-signers FILE]
    runner export mlflow PATH… [--tracking-uri URI]   # runs and sweeps into MLflow
    runner ls [DIR] [--json]                   # the runs under DIR (default runs/)
    runner audit experiment=mnist_ddp …        # the determinism audit alone, one step
    runner export RUN_DIR -o FILE [--format docker-archive|oci|squashfs] · runner import FILE [--engine NAME]

Each subcommand is imported only when it is asked for, so ``runner diff`` never loads Hydra
and ``runner run`` never loads the comparison code.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from runner.core.commands import COMMANDS as COMMAND_LINES
from runner.core.errors import EXIT_INTERRUPTED, EXIT_USAGE, RunnerError
from runner.flows.cli_common import fail

USAGE = "\n".join(
    [
        "usage: runner COMMAND [ARGS…]",
        "",
        "commands:",
        *(f"  {name:<8} {line}" for name, line in COMMAND_LINES.items()),
        "",
        "`runner COMMAND --help` describes a command's arguments; `runner run --help` the config groups.",
    ]
)


def _run(args: list[str]) -> None:
    from runner.__main__ import main as run_main

    sys.argv = [sys.argv[0], *args]  # Hydra reads its overrides from sys.argv
    run_main()


def _replay(args: list[str]) -> None:
    from runner.flows.replay import main as replay_main

    replay_main(args)


def _diff(args: list[str]) -> int:
    from runner.flows.diff import main as diff_main

    return diff_main(args)


def _init(args: list[str]) -> int | None:
    from runner.flows.init import main as init_main

    return init_main(args)


def _lock(args: list[str]) -> int | None:
    from runner.flows.lock import main as lock_main

    return lock_main(args)


def _summary(args: list[str]) -> int | None:
    from runner.flows.summary import main as summary_main

    return summary_main(args)


def _verify(args: list[str]) -> int | None:
    from runner.flows.verify import main as verify_main

    return verify_main(args)


def _keygen(args: list[str]) -> int | None:
    from runner.flows.keygen import main as keygen_main

    return keygen_main(args)


def _audit(args: list[str]) -> None:
    from runner.flows.audit import main as audit_main

    audit_main(args)


def _export(args: list[str]) -> int | None:
    if args[:1] == ["mlflow"]:  # `runner export mlflow PATH…`; a run dir named mlflow: ./mlflow
        from runner.flows.export_mlflow import main as mlflow_main

        return mlflow_main(args[1:])
    from runner.flows.export import main_export

    return main_export(args)


def _import(args: list[str]) -> int | None:
    from runner.flows.export import main_import

    return main_import(args)


def _ls(args: list[str]) -> int:
    from runner.flows.ls import main as ls_main

    return ls_main(args)


COMMANDS: dict[str, Callable[[list[str]], int | None]] = {
    "run": _run,
    "replay": _replay,
    "diff": _diff,
    "summary": _summary,
    "init": _init,
    "lock": _lock,
    "verify": _verify,
    "keygen": _keygen,
    "ls": _ls,
    "audit": _audit,
    "export": _export,
    "import": _import,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if args else EXIT_USAGE
    command = COMMANDS.get(args[0])
    try:
        if command is None:
            raise RunnerError(f"unknown command {args[0]!r}: one of {', '.join(COMMANDS)}", EXIT_USAGE)
        return int(command(args[1:]) or 0)
    except RunnerError as exc:
        fail(exc)
    except KeyboardInterrupt:  # a command that had nothing of its own to say about a Ctrl-C
        fail(RunnerError("interrupted", EXIT_INTERRUPTED))


if __name__ == "__main__":
    sys.exit(main())
