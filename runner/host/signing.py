"""Keys and signatures, offline: nothing here reaches a network.

Two kinds of key sign a run's envelopes:

* an Ed25519 key that ``runner keygen`` wrote (a PEM private key, mode 0600, and its public half
  as an OpenSSH line, ready for an ``allowed_signers`` file): signed in this process with
  ``cryptography``; the DSSE ``sig`` is the raw 64-byte Ed25519 signature;
* the user's own SSH key (an OpenSSH private key file, or a ``.pub`` whose private half is in
  ``ssh-agent``): signed by ``ssh-keygen -Y sign -n runner``; the DSSE ``sig`` is the SSHSIG blob,
  so ``ssh-keygen -Y verify`` checks it as it stands.

A signature's ``keyid`` is the key's SHA256 fingerprint as ``ssh-keygen -l`` prints it. Which key
signs is ``signing.key`` in the config, or the ``RUNNER_SIGNING_KEY`` variable.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fnmatch
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from runner.core.errors import EXIT_USAGE, RunnerError
from runner.core.provenance import Signature

NAMESPACE = "runner"  # ssh-keygen -Y's namespace: a signature made for git or mail is not one of ours
ENV_KEY = "RUNNER_SIGNING_KEY"
SSHSIG_MAGIC = b"SSHSIG"
_ARMOR = ("-----BEGIN SSH SIGNATURE-----", "-----END SSH SIGNATURE-----")
_SSH_TIMEOUT = 120


class Signer(Protocol):
    @property
    def path(self) -> Path: ...

    def sign(self, data: bytes) -> Signature: ...


def fingerprint(wire: bytes) -> str:
    """``SHA256:…`` of a public key in SSH wire format: what ``ssh-keygen -l`` prints."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(wire).digest()).decode().rstrip("=")


def _wire(key: Ed25519PublicKey) -> bytes:
    line = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return base64.b64decode(line.split()[1])


@dataclass(frozen=True)
class Ed25519Signer:
    """A key ``runner keygen`` wrote, signing in this process."""

    path: Path
    key: Ed25519PrivateKey

    def sign(self, data: bytes) -> Signature:
        keyid = fingerprint(_wire(self.key.public_key()))
        return Signature(keyid=keyid, sig=base64.b64encode(self.key.sign(data)).decode())


@dataclass(frozen=True)
class SshSigner:
    """The user's SSH key, signing through ``ssh-keygen -Y sign`` (a passphrase: use ssh-agent)."""

    path: Path

    def sign(self, data: bytes) -> Signature:
        cmd = ["ssh-keygen", "-q", "-Y", "sign", "-n", NAMESPACE, "-f", str(self.path)]
        try:
            proc = subprocess.run(cmd, input=data, capture_output=True, timeout=_SSH_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RunnerError(f"ssh-keygen -Y sign with {self.path} failed: {exc}", EXIT_USAGE) from None
        blob = unarmor(proc.stdout.decode(errors="replace")) if proc.returncode == 0 else None
        if blob is None:
            why = " ".join(proc.stderr.decode(errors="replace").split())[:200] or f"status {proc.returncode}"
            why += " (a key with a passphrase: ssh-add it to ssh-agent)" if "passphrase" in why else ""
            raise RunnerError(f"ssh-keygen -Y sign with {self.path} failed: {why}", EXIT_USAGE)
        keyid = sshsig_key(blob)
        return Signature(keyid=fingerprint(keyid) if keyid else "", sig=base64.b64encode(blob).decode())


def load_signer(path: str | os.PathLike) -> Signer:
    """The signer for a key file; RunnerError (one line) for a key that cannot sign."""
    p = Path(path).expanduser()
    try:
        data = p.read_bytes()
        mode = p.stat().st_mode
    except OSError as exc:
        raise RunnerError(f"signing key {p}: {exc.strerror or exc}", EXIT_USAGE) from None
    head = data.lstrip()[:64]
    if head.startswith(b"-----BEGIN OPENSSH PRIVATE KEY") or head.split(b" ")[0] in _SSH_PUBLIC_TYPES:
        if shutil.which("ssh-keygen") is None:
            raise RunnerError(f"signing key {p} is an SSH key, and ssh-keygen is not installed", EXIT_USAGE)
        return SshSigner(p)
    if mode & 0o077:
        raise RunnerError(f"signing key {p} can be read by others: chmod 600 {p}", EXIT_USAGE)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise RunnerError(
            f"signing key {p} is encrypted: use an SSH key with ssh-agent instead", EXIT_USAGE
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise RunnerError(
            f"signing key {p} is not a private key `runner keygen` wrote, nor an SSH key", EXIT_USAGE
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise RunnerError(f"signing key {p} is not an Ed25519 key", EXIT_USAGE)
    return Ed25519Signer(p, key)


_SSH_PUBLIC_TYPES = (
    b"ssh-ed25519",
    b"ssh-rsa",
    b"ecdsa-sha2-nistp256",
    b"ecdsa-sha2-nistp384",
    b"ecdsa-sha2-nistp521",
    b"sk-ssh-ed25519@openssh.com",
    b"sk-ecdsa-sha2-nistp256@openssh.com",
)


def keygen(path: Path, comment: str) -> Path:
    """Write a new Ed25519 private key at ``path`` (mode 0600) and its public half at ``path.pub``
    (an OpenSSH line); returns the public key's path. Never overwrites a key."""
    pub = path.with_name(path.name + ".pub")
    for p in (path, pub):
        if os.path.lexists(p):  # False for a name the filesystem refuses: the write below says why
            raise RunnerError(f"{p} already exists: a key is never overwritten", EXIT_USAGE)
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    written: list[Path] = []
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)  # a new key dir: its owner's only
        halves = ((path, private, 0o600), (pub, public + f" {comment}\n".encode(), 0o644))
        for target, data, mode in halves:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            written.append(target)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
    except OSError as exc:
        for done in written:  # a key without its public half (or half written) is no key: leave none
            done.unlink(missing_ok=True)
        raise RunnerError(f"cannot write {exc.filename or path}: {exc.strerror}", EXIT_USAGE) from None
    return pub


# -- checking signatures --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Trust:
    """The keys a verification accepts: Ed25519 keys by fingerprint (with who holds each), and an
    ``allowed_signers`` text for ``ssh-keygen -Y verify``."""

    keys: dict[str, tuple[str, Ed25519PublicKey]] = field(default_factory=dict)
    allowed_signers: str = ""

    def describe(self) -> str:
        return ", ".join(sorted({who for who, _ in self.keys.values()})) or "the allowed signers"


def trust_key(path: str | os.PathLike) -> Trust:
    """Trust one public key: a ``.pub`` line (OpenSSH) or a PEM public key."""
    p = Path(path).expanduser()
    data = _read(p, "public key")
    key: object
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            pem = serialization.load_pem_public_key(data)
            key, line = (
                pem,
                pem.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode(),
            )
        else:
            line = " ".join(data.decode().split()[:2])
            key = serialization.load_ssh_public_key(line.encode())
    except (ValueError, UnicodeDecodeError, UnsupportedAlgorithm, IndexError):
        raise RunnerError(
            f"{p} is not a public key (an OpenSSH .pub line or a PEM key)", EXIT_USAGE
        ) from None
    keys = {fingerprint(_wire(key)): (p.name, key)} if isinstance(key, Ed25519PublicKey) else {}
    return Trust(keys, f'{p.name.replace(" ", "_")} namespaces="{NAMESPACE}" {line}\n')


def trust_allowed_signers(path: str | os.PathLike) -> Trust:
    """Trust an ``allowed_signers`` file (``ssh-keygen(1)``'s format: principals, options, key):
    SSH signatures are checked by ``ssh-keygen`` against it, Ed25519 ones against its ssh-ed25519 keys."""
    p = Path(path).expanduser()
    try:
        text = _read(p, "allowed signers file").decode()
    except UnicodeDecodeError:
        raise RunnerError(f"{p} is not an allowed signers file (not text)", EXIT_USAGE) from None
    keys: dict[str, tuple[str, Ed25519PublicKey]] = {}
    for line in text.splitlines():
        tokens = line.split()
        if not tokens or tokens[0].startswith("#") or "ssh-ed25519" not in tokens[1:-1]:
            continue
        at = tokens.index("ssh-ed25519", 1)
        if not _for_runs(",".join(tokens[1:at])):
            continue
        with contextlib.suppress(ValueError, UnsupportedAlgorithm):
            key = serialization.load_ssh_public_key(f"ssh-ed25519 {tokens[at + 1]}".encode())
            if isinstance(key, Ed25519PublicKey):
                keys[fingerprint(_wire(key))] = (tokens[0], key)
    return Trust(keys, text)


def _for_runs(options: str) -> bool:
    """Whether an ``allowed_signers`` line's options let its key sign runs: no ``cert-authority``,
    now within its ``valid-after``/``valid-before`` (if any), and a ``namespaces`` pattern-list (if
    any) that takes ``runner``."""
    if "cert-authority" in options.lower() or not _valid_now(options):
        return False
    found = re.search(r'namespaces="([^"]*)"', options, re.IGNORECASE)
    if found is None:
        return True
    patterns = found.group(1).split(",")
    if any(p.startswith("!") and fnmatch.fnmatchcase(NAMESPACE, p[1:]) for p in patterns):
        return False
    return any(fnmatch.fnmatchcase(NAMESPACE, p) for p in patterns if not p.startswith("!"))


def _valid_now(options: str) -> bool:
    """Whether now is inside the line's ``valid-after``/``valid-before`` window, as ``ssh-keygen -Y
    verify`` holds it (an expired or not yet valid key signs nothing; a time it cannot read: neither)."""
    now = datetime.now(UTC)
    for name, expired in (("valid-after", lambda at: now < at), ("valid-before", lambda at: now > at)):
        found = re.search(rf'(?:^|,){name}="?([^",]*)"?', options, re.IGNORECASE)
        if found is None:
            continue
        at = _ssh_time(found.group(1))
        if at is None or expired(at):
            return False
    return True


def _ssh_time(text: str) -> datetime | None:
    """An ``allowed_signers`` time: YYYYMMDD[HHMM[SS]], UTC with a trailing Z, else local time."""
    digits = text[:-1] if text.upper().endswith("Z") else text
    formats = {8: "%Y%m%d", 12: "%Y%m%d%H%M", 14: "%Y%m%d%H%M%S"}
    if not digits.isdigit() or len(digits) not in formats:
        return None
    try:
        at = datetime.strptime(digits, formats[len(digits)])
    except ValueError:
        return None
    return at.replace(tzinfo=UTC) if digits != text else at.astimezone()


def _read(p: Path, what: str) -> bytes:
    try:
        return p.read_bytes()
    except OSError as exc:
        raise RunnerError(f"{what} {p}: {exc.strerror or exc}", EXIT_USAGE) from None


def check(sig: Signature, data: bytes, trust: Trust) -> str | None:
    """Who made ``sig`` over ``data`` among those ``trust`` holds, or None when no trusted key did."""
    try:
        raw = base64.b64decode(sig.sig, validate=True)
    except (binascii.Error, ValueError):
        return None
    if raw.startswith(SSHSIG_MAGIC):
        return _check_ssh(raw, data, trust.allowed_signers) if trust.allowed_signers else None
    candidates = [trust.keys[sig.keyid]] if sig.keyid in trust.keys else list(trust.keys.values())
    for who, key in candidates:
        with contextlib.suppress(InvalidSignature, ValueError):
            key.verify(raw, data)
            return who
    return None


def _check_ssh(blob: bytes, data: bytes, allowed_signers: str) -> str | None:
    """``ssh-keygen -Y find-principals`` then ``-Y verify`` (namespace ``runner``) on an SSHSIG blob."""
    if shutil.which("ssh-keygen") is None:
        raise RunnerError(
            "an SSH-signed envelope needs ssh-keygen to check it, and it is not installed", EXIT_USAGE
        )
    with _files(allowed_signers, armor(blob)) as (signers, sigfile):
        found = _ssh(["-Y", "find-principals", "-s", sigfile, "-f", signers], b"")
        for principal in (found or "").splitlines():
            cmd = ["-Y", "verify", "-f", signers, "-I", principal, "-n", NAMESPACE, "-s", sigfile]
            if _ssh(cmd, data) is not None:
                return principal
    return None


def _ssh(args: list[str], data: bytes) -> str | None:
    """ssh-keygen's stdout when it succeeds, else None."""
    try:
        proc = subprocess.run(["ssh-keygen", *args], input=data, capture_output=True, timeout=_SSH_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.decode(errors="replace") if proc.returncode == 0 else None


@contextlib.contextmanager
def _files(*texts: str) -> Iterator[list[str]]:
    with tempfile.TemporaryDirectory(prefix="runner-verify-") as tmp:
        paths = []
        for i, text in enumerate(texts):
            path = Path(tmp) / f"{i}"
            path.write_text(text)
            paths.append(str(path))
        yield paths


def armor(blob: bytes) -> str:
    """An SSHSIG blob as ``ssh-keygen -Y`` writes it to a ``.sig`` file."""
    body = "\n".join(textwrap.wrap(base64.b64encode(blob).decode(), 70))
    return f"{_ARMOR[0]}\n{body}\n{_ARMOR[1]}\n"


def unarmor(text: str) -> bytes | None:
    """The SSHSIG blob inside an armored signature, or None."""
    start, end = text.find(_ARMOR[0]), text.find(_ARMOR[1])
    if start < 0 or end < start:
        return None
    try:
        blob = base64.b64decode("".join(text[start + len(_ARMOR[0]) : end].split()), validate=True)
    except (binascii.Error, ValueError):
        return None
    return blob if blob.startswith(SSHSIG_MAGIC) else None


def sshsig_key(blob: bytes) -> bytes | None:
    """The signer's public key (SSH wire format) inside an SSHSIG blob: magic, version, key, …"""
    at = len(SSHSIG_MAGIC) + 4
    if len(blob) < at + 4:
        return None
    size = int.from_bytes(blob[at : at + 4], "big")
    key = blob[at + 4 : at + 4 + size]
    return key if len(key) == size else None
