"""The one exception type the runner raises for problems a researcher can act on.

Code anywhere in the runner raises :class:`RunnerError` with a message written for a
person; the edges (``python -m runner``, ``runner.replay``, ``runner.diff``, ...) turn it
into one line on stderr and a non-zero exit status. Anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

# Exit statuses, shared by every command.
EXIT_FAILED = 1  # training (or a replay's comparison) failed
EXIT_USAGE = 2  # bad input: config, override, arguments, manifest
EXIT_ENVIRONMENT = 3  # Docker engine, base image, wheels, dataset unavailable
EXIT_BUILD = 4  # image build failed
EXIT_ENGINE_LOST = 5  # the container engine went away mid-run (dockerd stopped or restarted)
EXIT_INTERRUPTED = 130  # Ctrl-C / SIGTERM


class RunnerError(Exception):
    """A failure with a message meant for the user, not a traceback."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE):
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


# A training process that found its disk full (errno ENOSPC) exits with this status, having printed
# :func:`no_space` as its last line; the runner records the run failed, reason "no space".
EXIT_NO_SPACE = 28
NO_SPACE = "no space left on device"


def no_space(path: object, free: int | None) -> str:
    """One line for a full disk: the path that could not be written and the space left there."""
    left = "unknown" if free is None else f"{free:,} bytes"
    return f"{NO_SPACE} writing {path} ({left} free)"


# A run whose container engine went away mid-run (its daemon stopped, restarted or died) is
# recorded failed, reason ENGINE_LOST, its checkpoints kept; ``+resume=RUN_DIR`` continues it once
# the engine is back.
ENGINE_LOST = "engine lost"


class EngineLost(RunnerError):
    """The container engine stopped answering while a container of the run ran. ``engine`` names it
    and where it was reached (``docker at unix:///var/run/docker.sock``); ``why`` says how it showed."""

    def __init__(self, engine: str, why: str):
        super().__init__(f"the container engine ({engine}) went away: {why}", EXIT_ENGINE_LOST)
        self.engine = engine
        self.why = why


def shell_status(returncode: int) -> int:
    """A child's return code as a shell reports it: killed by signal N → 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


def signal_name(status: int) -> str | None:
    """The signal that a shell status past 128 stands for (``SIGKILL`` for 137), or None."""
    if status <= 128:
        return None
    import signal

    try:
        return signal.Signals(status - 128).name
    except ValueError:
        return f"signal {status - 128}"
