"""A script experiment that looks at the box it runs in, for the runner's own tests.

    probe.py report [--wait FILE] [--connect HOST:PORT ...] [--env NAME ...]
        write outputs/probe.json: ids, capabilities, no_new_privs, network reach, which mounts take
        writes, the Docker socket, env names (and sha256 of the values of the --env names); with
        --wait, block until FILE exists in the run dir first (so a test can inspect the container)
    probe.py fail CODE      write outputs/partial.txt, print a marker line, exit with CODE
    probe.py hog MB [NODE]  write outputs/partial.txt, then allocate and touch MB MiB (with NODE,
                            on that node of a multi-node run only; the others wait)
    probe.py wait           write outputs/partial.txt, print a line a second until stopped

Standard library only: it runs inside the training image (and is imported on the host by tests
for its ``connect`` check).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import socket
import sys
import time
from pathlib import Path


def connect(host: str, port: int, timeout: float = 2.0) -> str:
    """ "ok" when a TCP connection opens, else the errno name (or exception type) it failed with."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return "ok"
    except OSError as exc:
        return errno.errorcode.get(exc.errno, type(exc).__name__) if exc.errno else type(exc).__name__


def _try_write(directory: str) -> str:
    path = Path(directory) / f".probe-{os.getpid()}"
    try:
        path.write_text("x")
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    path.unlink()
    return "ok"


def _status_fields() -> dict[str, str]:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp"):
            out[key] = value.strip()
    return out


def report(args: list[str]) -> None:
    wait = None
    names: list[str] = []
    connects: list[str] = []
    while args:
        flag = args.pop(0)
        if flag == "--wait":
            wait = args.pop(0)
        elif flag == "--connect":
            connects.append(args.pop(0))
        elif flag == "--env":
            names.append(args.pop(0))
    run_dir = Path(os.environ["RUNNER_RUN_DIR"])
    if wait:
        deadline = time.time() + 120
        while not (run_dir / wait).exists() and time.time() < deadline:
            time.sleep(0.1)
    facts = {
        "uid": os.getuid(),
        "euid": os.geteuid(),
        "gid": os.getgid(),
        "groups": os.getgroups(),
        "status": _status_fields(),
        "interfaces": sorted(name for _, name in socket.if_nameindex()),
        "connect": {
            target: connect(target.rpartition(":")[0], int(target.rpartition(":")[2])) for target in connects
        },
        "loopback": _loopback_works(),
        "writes": {d: _try_write(d) for d in ("/code", "/data", "/usr", "/", "/etc", "/job", "/tmp")},
        "docker_socket": [p for p in ("/var/run/docker.sock", "/run/docker.sock") if os.path.exists(p)],
        "env_names": sorted(os.environ),
        "env_sha256": {
            n: hashlib.sha256(os.environ[n].encode()).hexdigest() for n in names if n in os.environ
        },
    }
    out = Path(os.environ["RUNNER_OUTPUT_DIR"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "probe.json").write_text(json.dumps(facts, indent=1, sort_keys=True))
    print("probe: report written", flush=True)


def _loopback_works() -> bool:
    """gloo needs loopback: a listener on 127.0.0.1 must be reachable from this process."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        return connect("127.0.0.1", server.getsockname()[1]) == "ok"


def _partial() -> None:
    out = Path(os.environ["RUNNER_OUTPUT_DIR"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "partial.txt").write_text("written before the end\n")


def main(argv: list[str]) -> int:
    mode, args = argv[0], argv[1:]
    if mode == "report":
        report(args)
        return 0
    _partial()
    if mode == "fail":
        print("probe: failing on purpose", flush=True)
        return int(args[0])
    if mode == "hog" and len(args) > 1 and os.environ.get("GROUP_RANK") != args[1]:
        mode = "wait"  # another node hogs
    if mode == "hog":
        print("probe: allocating", flush=True)
        blocks = []
        for _ in range(int(args[0])):
            block = bytearray(1 << 20)
            block[::4096] = b"\x01" * 256  # touch every page, or the kernel never backs them
            blocks.append(block)
        print("probe: allocated everything (the memory limit did not hold)", flush=True)
        return 0
    if mode == "wait":
        for i in range(600):
            print(f"probe: waiting {i}", flush=True)
            time.sleep(1)
        return 0
    print(f"probe: unknown mode {mode!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
