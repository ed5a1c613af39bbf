"""Every module this repository's prose names must exist: ``make lint`` runs this.

A module that moves leaves docstrings and comments pointing at its old place, and nothing else
notices. This reads the comments and docstrings of every Python file, and the Markdown files, and
resolves each reference to the project's own code:

* a dotted name that starts with ``runner.`` or ``hydra_plugins.`` (``runner.flows.run``,
  ``python -m runner.worker``, ``runner.core.layout.MANIFEST``);
* the target of a Sphinx role (``:mod:``, ``:func:``, ``:class:`` and the others) when it is
  dotted, and every ``:mod:`` target.

A reference resolves when its longest prefix that is a module of this tree (a ``.py`` file or a
package) exists and the next part, if any, is a name that module defines or imports at top level
(read with :mod:`ast`, nothing is imported). A ``:mod:`` target outside the tree must be
importable. Exit status 1 and one line per reference that does not resolve.

    python scripts/check_refs.py [ROOT]
"""

from __future__ import annotations

import ast
import importlib.util
import io
import re
import sys
import tokenize
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

OWN = ("runner", "hydra_plugins", "bench", "tests", "experiments")
SOURCES = ("runner", "hydra_plugins", "bench", "tests", "experiments", "scripts")
DOCS = ("README.md", "bench/README.md")
# a dotted name of the runner's own packages; not preceded by a dot or word character, so a file
# name such as ``.runner.lock`` or ``my.runner.x`` is not one
_DOTTED = re.compile(r"(?<![\w./-])((?:runner|hydra_plugins)(?:\.[A-Za-z_]\w*)+)")
_ROLE = re.compile(r":(mod|func|class|data|meth|attr|exc):`~?([A-Za-z_][\w.]*)`")


@dataclass(frozen=True)
class Ref:
    file: Path
    line: int
    target: str
    role: str | None  # "mod", "func", … for a Sphinx role; None for a bare dotted name


def texts(path: Path) -> Iterator[tuple[int, str]]:
    """(first line, text) of every comment and docstring of a Python file, or each line of another."""
    source = path.read_text()
    if path.suffix != ".py":
        yield from enumerate(source.splitlines(), start=1)
        return
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            yield tok.start[0], tok.string
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                yield first.lineno, first.value.value


def refs_in(path: Path) -> Iterator[Ref]:
    for start, text in texts(path):
        for offset, line in enumerate(text.splitlines() or [text]):
            for m in _ROLE.finditer(line):
                if "." in m.group(2) or m.group(1) == "mod":
                    yield Ref(path, start + offset, m.group(2), m.group(1))
            for m in _DOTTED.finditer(_ROLE.sub("", line)):
                yield Ref(path, start + offset, m.group(1).rstrip("."), None)


@cache
def module_file(root: Path, dotted: str) -> Path | None:
    base = root.joinpath(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@cache
def top_level_names(path: Path) -> frozenset[str]:
    """Names a module defines or imports at its top level (and in ``if``/``try`` blocks there)."""
    names: set[str] = set()
    body = list(ast.parse(path.read_text()).body)
    while body:
        node = body.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.If | ast.Try):
            body.extend(node.body + node.orelse + getattr(node, "finalbody", []))
            for handler in getattr(node, "handlers", []):
                body.extend(handler.body)
    if path.name == "__init__.py":  # a package's submodules are reachable as its attributes
        names.update(p.stem for p in path.parent.iterdir() if p.suffix == ".py" or p.is_dir())
    return frozenset(names)


def resolves(root: Path, ref: Ref) -> bool:
    parts = ref.target.split(".")
    if parts[0] not in OWN:
        return ref.role != "mod" or _importable(ref.target)
    for cut in range(len(parts), 0, -1):
        path = module_file(root, ".".join(parts[:cut]))
        if path is not None:
            rest = parts[cut:]
            return not rest or rest[0] in top_level_names(path)
    return False


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def files(root: Path) -> Iterator[Path]:
    for top in SOURCES:
        yield from sorted((root / top).rglob("*.py"))
    for doc in DOCS:
        if (root / doc).is_file():
            yield root / doc


def main(argv: list[str]) -> int:
    root = Path(argv[0] if argv else ".").resolve()
    bad = [ref for path in files(root) for ref in refs_in(path) if not resolves(root, ref)]
    for ref in bad:
        what = f":{ref.role}:`{ref.target}`" if ref.role else ref.target
        print(f"{ref.file.relative_to(root)}:{ref.line}: {what} names no module or name of this tree")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
