"""What a training log's lines become, pure: progress-bar redraws collapsed, advertising kept off
the terminal.

A progress bar redraws itself with carriage returns, so one "line" of a container's output can
hold thousands of states; only the last one is worth a line in ``train.log``. Some lines are
noise for a person at a terminal (Lightning's advertising tips and its start-up banners, which
every rank prints; c10d's complaint that a container with no network cannot resolve its own host
name): they stay in the log file, but the terminal does not show them.
"""

from __future__ import annotations

import re

# Lines that reach logs/train.log but not the terminal.
TERMINAL_NOISE = (
    re.compile(r"💡 Tip:"),  # Lightning's advertising (litlogger, litmodels)
    re.compile(r"\blit(logger|models)\b.*pypi\.org"),
    re.compile(
        r"\bsocket\.cpp:\d+\] \[c10d\] The (hostname|IPv6 network addresses) of .* cannot be retrieved"
    ),
    # Lightning's start-up banners, once per rank: the manifest records devices and the launch
    re.compile(r"^(GPU|TPU|HPU|IPU) available: "),
    re.compile(r"^LOCAL_RANK: \d+ - CUDA_VISIBLE_DEVICES: "),
    re.compile(r"^Initializing distributed: GLOBAL_RANK: \d+"),
    re.compile(r"^-{20,}$"),  # the rule above and below the distributed_backend block
    re.compile(r"^distributed_backend=\w+$"),
    re.compile(r"^All distributed processes registered\. Starting with \d+ processes$"),
    re.compile(r"smaller than the logging interval Trainer\(log_every_n_steps="),
    re.compile(r"The `srun` command is available on your system but is not used"),
    re.compile(r"You are using a CUDA device .* that has Tensor Cores"),
)


def last_redraw(line: str) -> str:
    """The final state of a line rewritten with carriage returns (``"10%\\r50%\\r100%"`` → ``"100%"``).

    A trailing ``\\r`` (a bar that returns to the line start before its next draw) is ignored, so
    the last drawn state is kept, never an empty string."""
    if "\r" not in line:
        return line
    states = [s for s in line.split("\r") if s.strip()]
    return states[-1] if states else ""


def is_terminal_noise(line: str) -> bool:
    """True for a line the terminal does not need (it is still written to the log file)."""
    return any(p.search(line) for p in TERMINAL_NOISE)
