"""``runner keygen [PATH]``: a new Ed25519 key to sign runs with, offline.

Writes ``PATH`` (the private key, mode 0600; default ``~/.runner/signing-key``) and ``PATH.pub``
(its public half as an OpenSSH line, ready for a lab's ``allowed_signers`` file). Never
overwrites a key.
"""

from __future__ import annotations

import argparse
import getpass
import platform
from pathlib import Path

from runner.core import commands
from runner.host import signing

DEFAULT = "~/.runner/signing-key"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="runner keygen", description=commands.COMMANDS["keygen"])
    p.add_argument(
        "path", nargs="?", default=DEFAULT, help=f"where to write the private key (default {DEFAULT})"
    )
    p.add_argument("--comment", help="the public key's comment (default: you@host)")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    path = Path(args.path).expanduser()
    comment = args.comment or f"{getpass.getuser()}@{platform.node()}"
    pub = signing.keygen(path, comment)
    print(f"private key: {path} (mode 0600; keep it on this machine)")
    print(f"public key:  {pub}")
    print(f"sign runs with it: signing.key={path} or {signing.ENV_KEY}={path}")
    line = " ".join(pub.read_text().split()[:2])
    print(f"let others trust it: add `{comment} {line}` to an allowed_signers file")
    return 0
