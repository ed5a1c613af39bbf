"""Claiming a run dir: one runner at a time, and run dirs that hold a manifest are never overwritten."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from runner.core import layout, record
from runner.core.errors import EXIT_ENVIRONMENT, EXIT_USAGE, RunnerError, no_space
from runner.host import records

RESUMABLE = ("interrupted", "failed", record.ABANDONED)


def claim_run_dir(run_dir: Path, resumable: bool = False) -> int:
    """Take a run dir for this run alone and return the claim's descriptor (see :func:`release`).

    The claim is an ``flock`` on ``.runner.claim``, taken *before* the manifest is looked at, so of
    two runners started at once only one gets past the check; the kernel drops it if the runner
    dies, so a killed runner never leaves its run dir stuck. A run dir that holds a manifest is
    refused (run dirs are never overwritten) — except by a resume (``resumable``), which needs
    one that reads ``interrupted`` or ``failed``.
    """
    import fcntl

    path = run_dir / layout.CLAIM
    while True:
        fd = _open_claim(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunnerError(f"{run_dir} is in use by another run", EXIT_USAGE) from None
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)  # its holder released it (unlinked) while we opened it: claim the new file
    try:
        _check_claimable(run_dir, resumable)
    except BaseException:
        release(run_dir, fd)
        raise
    return fd


def _open_claim(path: Path) -> int:
    """The claim file, made with its dir; a dir that cannot be had (no space or no inode left, not a
    dir, not writable) is one line, before anything of the run is written."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
    except OSError as exc:
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
        raise RunnerError(
            f"cannot take the run dir {path.parent}: {exc.strerror or exc}",
            EXIT_ENVIRONMENT if full else EXIT_USAGE,
        ) from None


HYDRA_FILES = {"config.yaml", "hydra.yaml", "overrides.yaml"}  # what Hydra writes into <run dir>/.hydra


def discard_if_unused(run_dir: Path, job_log: str) -> bool:
    """Remove the run dir of a run refused before it wrote anything: one that holds only what Hydra
    put there when it started the job (``.hydra/`` and the job's log). A dir holding anything else
    (a record, another run's files, the user's) is left whole. True when it was removed."""
    try:
        entries = {p.name for p in run_dir.iterdir()}
        hydra = run_dir / ".hydra"
        if not entries <= {".hydra", job_log} or (
            hydra.is_dir() and not {p.name for p in hydra.iterdir()} <= HYDRA_FILES
        ):
            return False
        for name in HYDRA_FILES:
            (hydra / name).unlink(missing_ok=True)
        if hydra.is_dir():
            hydra.rmdir()
        (run_dir / job_log).unlink(missing_ok=True)
        run_dir.rmdir()
    except OSError:  # gone already, not a dir, or something appeared meanwhile: leave what is there
        return False
    return True


def refuse_held(run_dir: Path, claimed: bool = False) -> None:
    """Run dirs are never overwritten: refuse one that already holds a manifest (``claimed``: this
    process holds the dir's claim, so no other runner is alive in it)."""
    if (run_dir / layout.MANIFEST).exists():
        reads = _reads(run_dir, claimed)
        if reads == record.RUNNING:  # its runner is alive: the provisional record of a run under way
            raise RunnerError(f"{run_dir} is in use by another run", EXIT_USAGE)
        if reads in RESUMABLE and _without_code(run_dir):
            raise RunnerError(nothing_ran(run_dir), EXIT_USAGE)
        if reads == record.ABANDONED:
            raise RunnerError(
                f"{run_dir} holds an abandoned run (its runner was killed): run dirs are never "
                f"overwritten; continue it from its last checkpoint with +resume={run_dir}",
                EXIT_USAGE,
            )
        raise RunnerError(
            f"{run_dir} already holds a manifest: run dirs are never overwritten "
            f"(an interrupted or failed run continues with +resume={run_dir})",
            EXIT_USAGE,
        )


def nothing_ran(run_dir: Path) -> str:
    """Why a run dir whose run stopped before its code snapshot was taken is neither resumed nor
    taken over, and what to do instead."""
    return (
        f"{run_dir} holds a run stopped before its code snapshot was taken: nothing of it ran, so there "
        "is nothing to resume, and run dirs are never overwritten; remove it, or run in another dir"
    )


def _without_code(run_dir: Path) -> bool:
    """Whether the run dir's manifest records no code snapshot (one that does not read: False)."""
    try:
        return records.read_manifest(run_dir).code is None
    except RunnerError:
        return False


def _check_claimable(run_dir: Path, resumable: bool) -> None:
    if not resumable:
        refuse_held(run_dir, claimed=True)
        return
    held = run_dir / layout.MANIFEST
    if not held.exists():
        raise RunnerError(f"{run_dir} holds no manifest: there is no run to resume", EXIT_USAGE)
    status = record.status_read(records.read_manifest(held).status, runner_alive=False)  # the claim is ours
    if status not in RESUMABLE:
        raise RunnerError(
            f"{run_dir} reads {status}: only an interrupted, failed or abandoned run can be resumed",
            EXIT_USAGE,
        )


def runner_alive(run_dir: Path) -> bool:
    """Whether a runner holds ``run_dir``'s claim now (the kernel drops a dead runner's ``flock``).
    Looking takes a shared lock for an instant: a runner claiming the dir in that instant is told
    it is in use, and may start again."""
    import fcntl

    try:
        fd = os.open(run_dir / layout.CLAIM, os.O_RDONLY)
    except OSError:  # no claim file: no runner holds it
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def run_status(run_dir: Path, recorded: str) -> str:
    """How the run in ``run_dir``, whose manifest records ``recorded``, reads now: ``abandoned``
    for one still ``running`` that no runner holds (:func:`runner.core.record.status_read`)."""
    return record.status_read(recorded, runner_alive(run_dir))


def _reads(run_dir: Path, claimed: bool) -> str | None:
    try:
        recorded = records.read_manifest(run_dir).status
    except RunnerError:
        return None
    return record.status_read(recorded, runner_alive=False) if claimed else run_status(run_dir, recorded)


RESERVE_BYTES = 1 << 20  # room kept for the run's final record (manifest, provenance, their temp copies)
# files kept, one for each file of the final record (the manifest, the provenance): a file system out
# of inodes, not of bytes, still takes both
RESERVE_FILES = 2


def _reserve_files(run_dir: Path) -> list[Path]:
    """``.runner.reserve`` (the bytes), then ``.runner.reserve.1`` … (an inode each)."""
    return [run_dir / layout.RESERVE, *(run_dir / f"{layout.RESERVE}.{k}" for k in range(1, RESERVE_FILES))]


def reserve(run_dir: Path, nbytes: int = RESERVE_BYTES) -> None:
    """Set space aside for the run's final record (``.runner.reserve``, really allocated, and a
    file for each other file of the record): a disk that fills up mid-run, in bytes or in inodes,
    still takes the record once :func:`unreserve` frees it. A disk without that much room refuses
    the run, in one line."""
    try:
        for k, path in enumerate(_reserve_files(run_dir)):
            fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
            try:
                if k == 0:
                    os.posix_fallocate(fd, 0, nbytes)
            finally:
                os.close(fd)
    except OSError as exc:
        unreserve(run_dir)
        if exc.errno != errno.ENOSPC:
            raise
        free = shutil.disk_usage(run_dir).free
        raise RunnerError(
            f"{no_space(run_dir, free)}: a run needs {nbytes:,} bytes kept for its record", EXIT_ENVIRONMENT
        ) from None


def unreserve(run_dir: Path) -> None:
    """Free the space :func:`reserve` kept, just before the final record is written."""
    for path in _reserve_files(run_dir):
        path.unlink(missing_ok=True)


def make_writable_for(run_dir: Path, user: str) -> None:
    """As root, hand the run dir's writable parts to the container's unprivileged uid."""
    if os.geteuid() != 0:
        return
    uid, _, gid = user.partition(":")
    for sub in (run_dir, *(run_dir / name for name in layout.WRITABLE_DIRS)):
        sub.mkdir(exist_ok=True)
        os.chown(sub, int(uid), int(gid or uid))


@contextlib.contextmanager
def released(run_dir: Path, claim_fd: int) -> Iterator[None]:
    """Run the block, then give the run dir back whatever happened in it."""
    try:
        yield
    finally:
        release(run_dir, claim_fd)


def release(run_dir: Path, claim_fd: int) -> None:
    """Give the run dir back: every way out of :func:`runner.flows.run.run` after the claim ends here.

    Unlink first, then unlock: a runner that opened the old file meanwhile sees it is gone and
    claims a new one, and never two runners hold the claim at once."""
    (run_dir / layout.CLAIM).unlink(missing_ok=True)
    os.close(claim_fd)
