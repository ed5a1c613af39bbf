"""Pinned requirements, read one way: hash-pinned locks, ``pip freeze`` lines, distribution file names. Pure.

Every place that asks "which version of which project" goes through here, so ``Jinja2``,
``jinja2`` and ``jinja_2`` are one project everywhere (PEP 503 names) and a pin means the same
thing in a lock, in a recorded package list and in a wheelhouse. The grammar is
:mod:`packaging`'s (pip's own), not a regex of ours. Host side only: the worker never parses
locks, and the image need not have ``packaging``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import NamedTuple

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)

_HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})")
_OPTION = re.compile(r"\s--[A-Za-z]")  # where a requirement line's options (--hash=…) begin
_ARCHIVE = re.compile(r"\.(tar\.gz|tar\.bz2|tar\.xz|tgz|zip)$")


class Pin(NamedTuple):
    """A project's exact version and the sha256 digests a lock accepts for its files (may be empty)."""

    version: str
    hashes: frozenset[str]


def canonical_name(name: str) -> str:
    """PEP 503 normalisation: ``Jinja2`` and ``jinja2``, ``typing_extensions`` and
    ``typing-extensions`` match."""
    return str(canonicalize_name(name))


def pin(line: str) -> tuple[str, str] | None:
    """``name[extras]==version [; marker]`` → (canonical name, version); None for anything else
    (a range, a direct reference, an editable install, an option line, a comment)."""
    try:
        req = Requirement(line.strip())
    except InvalidRequirement:
        return None
    specs = list(req.specifier)
    if req.url or len(specs) != 1 or specs[0].operator not in ("==", "===") or "*" in specs[0].version:
        return None
    return canonical_name(req.name), specs[0].version


def _logical_lines(text: str) -> list[str]:
    """A requirements file's lines with comments dropped and ``\\`` continuations joined."""
    out, cur = [], ""
    for raw in text.splitlines():
        line = "" if raw.lstrip().startswith("#") else raw.split(" #", 1)[0].rstrip()
        if line.endswith("\\"):
            cur += line[:-1] + " "
            continue
        cur += line
        if cur.strip():
            out.append(cur.strip())
        cur = ""
    if cur.strip():
        out.append(cur.strip())
    return out


def lock_pins(text: str) -> dict[str, Pin]:
    """A hash-pinned lock (``pip-compile --generate-hashes``) → {canonical name: Pin}. Lines that
    pin nothing (options, ranges, references) are not in it."""
    pins = {}
    for line in _logical_lines(text):
        m = _OPTION.search(line)
        found = pin(line[: m.start()] if m else line)
        if found:
            pins[found[0]] = Pin(found[1], frozenset(_HASH.findall(line)))
    return pins


def pinned_version(lock_text: str, project: str) -> str | None:
    """The version a lock pins ``project`` to, or None when it does not pin it."""
    found = lock_pins(lock_text).get(canonical_name(project))
    return found.version if found else None


def freeze_versions(lines: Iterable[str]) -> dict[str, str]:
    """``pip freeze``-style lines → {canonical name: version}. Lines that are not ``name==version``
    (direct references, editable installs) are kept whole as their own key, with version ``""``;
    blank lines and comments are dropped."""
    out = {}
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        found = pin(line)
        if found:
            out[found[0]] = found[1]
        else:
            out[line] = ""
    return out


def distribution_project(filename: str) -> str:
    """The canonical project name of a wheel or source archive's file name
    (``Jinja2-3.1.6-py3-none-any.whl`` → ``jinja2``). A name that follows neither convention
    gives its part before the last ``-`` (before the first, for a ``.whl``)."""
    try:
        if filename.endswith(".whl"):
            return str(parse_wheel_filename(filename)[0])
        return str(parse_sdist_filename(filename)[0])
    except (InvalidWheelFilename, InvalidSdistFilename):
        pass
    if filename.endswith(".whl"):
        return canonical_name(filename.split("-", 1)[0])
    return canonical_name(_ARCHIVE.sub("", filename).rsplit("-", 1)[0])
