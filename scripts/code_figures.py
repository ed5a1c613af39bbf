"""The code-shape figures of issue 20, read from the source (run by hand, not by CI):

    .venv/bin/python scripts/code_figures.py [--tree] [--list]

* annotations in ``runner/`` that hold ``dict[str, Any]`` or a bare ``dict`` (parameters, returns,
  annotated assignments), read with :mod:`ast`;
* the longest function in ``runner/`` and ``hydra_plugins/`` (``def`` line to last line);
* functions with more than 6 parameters besides ``self``/``cls`` (``*args``/``**kwargs`` not counted);
* line counts of the Hydra launcher modules;
* import cycles among the modules of ``runner`` and ``hydra_plugins`` (grimp's graph, the one
  import-linter checks; imports inside functions included);
* ``global`` statements, and module-level mutable state: a lower-case module name bound to a list,
  dict or set (a literal, a comprehension or a constructor call), or rebound by ``global``.

``--list`` names every site behind each figure; ``--tree`` prints the package tree with line counts.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("runner", "hydra_plugins")
LAUNCHERS = (
    "hydra_plugins/runner_launcher/runner_launcher.py",
    "hydra_plugins/runner_slurm/slurm_launcher.py",
)
MAX_PARAMS = 6
MUTABLE_CALLS = {"list", "dict", "set", "defaultdict", "deque", "OrderedDict", "Counter"}


@dataclass(frozen=True)
class Site:
    path: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what}"


def sources(*tops: str) -> Iterator[tuple[str, ast.Module]]:
    for top in tops:
        for path in sorted((ROOT / top).rglob("*.py")):
            yield path.relative_to(ROOT).as_posix(), ast.parse(path.read_text(), str(path))


def _is_loose_dict(node: ast.expr) -> bool:
    """``dict[str, Any]`` or a bare ``dict``/``Dict`` somewhere in an annotation."""
    for sub in ast.walk(node):
        if (
            isinstance(sub, ast.Subscript)
            and isinstance(sub.value, ast.Name)
            and sub.value.id in ("dict", "Dict")
        ):
            args = sub.slice.elts if isinstance(sub.slice, ast.Tuple) else [sub.slice]
            if len(args) == 2 and isinstance(args[1], ast.Name) and args[1].id == "Any":
                return True
    bare = {id(s.value) for s in ast.walk(node) if isinstance(s, ast.Subscript)}
    return any(
        isinstance(s, ast.Name) and s.id in ("dict", "Dict") and id(s) not in bare for s in ast.walk(node)
    )


def _annotation(node: ast.expr | None) -> ast.expr | None:
    """An annotation as an expression (a string annotation parsed)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        try:
            return ast.parse(node.value, mode="eval").body
        except SyntaxError:
            return None
    return node


def loose_dicts() -> list[Site]:
    found = []
    for path, tree in sources("runner"):
        for node in ast.walk(tree):
            annotations: list[tuple[str, ast.expr | None]] = []
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                a = node.args
                params = [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg]
                annotations += [(f"{node.name}({p.arg})", p.annotation) for p in params if p is not None]
                annotations.append((f"{node.name} -> return", node.returns))
            elif isinstance(node, ast.AnnAssign):
                annotations.append((ast.unparse(node.target), node.annotation))
            for what, ann in annotations:
                expr = _annotation(ann)
                if expr is not None and _is_loose_dict(expr):
                    found.append(
                        Site(path, getattr(ann, "lineno", node.lineno), f"{what}: {ast.unparse(expr)}")
                    )
    return found


def functions(*tops: str) -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    for path, tree in sources(*tops):
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                yield path, node


def longest() -> list[Site]:
    sized = [
        Site(path, f.lineno, f"{f.name}: {f.end_lineno - f.lineno + 1} lines")
        for path, f in functions(*PACKAGES)
        if f.end_lineno is not None
    ]
    return sorted(sized, key=lambda s: -int(s.what.rsplit(": ", 1)[1].split()[0]))


def many_params() -> list[Site]:
    found = []
    for path, f in functions(*PACKAGES):
        a = f.args
        names = [p.arg for p in (*a.posonlyargs, *a.args, *a.kwonlyargs) if p.arg not in ("self", "cls")]
        if len(names) > MAX_PARAMS:
            found.append(Site(path, f.lineno, f"{f.name}: {len(names)} parameters"))
    return found


def launcher_lines() -> list[Site]:
    return [
        Site(p, 1, f"{len((ROOT / p).read_text().splitlines())} lines")
        for p in LAUNCHERS
        if (ROOT / p).exists()
    ]


def import_cycles() -> list[list[str]]:
    """Strongly connected components of more than one module in the import graph."""
    import grimp

    sys.path.insert(0, str(ROOT))
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    modules = sorted(graph.modules)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(m: str) -> None:  # Tarjan's algorithm, recursive: the graph is a few hundred modules
        index[m] = low[m] = len(index)
        stack.append(m)
        on_stack.add(m)
        for n in sorted(graph.find_modules_directly_imported_by(m) & graph.modules):
            if n not in index:
                visit(n)
                low[m] = min(low[m], low[n])
            elif n in on_stack:
                low[m] = min(low[m], index[n])
        if low[m] == index[m]:
            component = []
            while True:
                n = stack.pop()
                on_stack.discard(n)
                component.append(n)
                if n == m:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for m in modules:
        if m not in index:
            visit(m)
    return cycles


def module_state() -> list[Site]:
    found = []
    for path, tree in sources("runner"):
        rebound = {name for node in ast.walk(tree) if isinstance(node, ast.Global) for name in node.names}
        for node in ast.walk(tree):
            if isinstance(node, ast.Global):
                found.append(Site(path, node.lineno, f"global {', '.join(node.names)}"))
        for node in tree.body:
            targets = (
                node.targets
                if isinstance(node, ast.Assign)
                else [node.target]
                if isinstance(node, ast.AnnAssign)
                else []
            )
            value = getattr(node, "value", None)
            for t in targets:
                if isinstance(t, ast.Name) and (t.id in rebound or (_lower(t.id) and _mutable(value))):
                    found.append(
                        Site(
                            path,
                            node.lineno,
                            f"module-level {t.id} = {ast.unparse(value)[:50] if value else '…'}",
                        )
                    )
    return found


def _lower(name: str) -> bool:
    """Not a constant by convention (``UPPER``) nor a module dunder (``__all__``)."""
    return not name.isupper() and not (name.startswith("__") and name.endswith("__"))


def _mutable(value: ast.expr | None) -> bool:
    if isinstance(value, ast.List | ast.Dict | ast.Set | ast.ListComp | ast.DictComp | ast.SetComp):
        return True
    return isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id in MUTABLE_CALLS


def tree() -> list[str]:
    lines = []
    for top in PACKAGES:
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            lines.append(f"{len(path.read_text().splitlines()):6d}  {rel}")
    return lines


def figures() -> list[tuple[str, str, list[Site]]]:
    """(title, value, the sites behind it) for each figure."""
    dicts, long, params, cycles = loose_dicts(), longest(), many_params(), import_cycles()
    state = module_state()
    globals_ = [s for s in state if s.what.startswith("global ")]
    names = [s for s in state if not s.what.startswith("global ")]
    return [
        ("annotations in runner/ holding dict[str, Any] or a bare dict", str(len(dicts)), dicts),
        ("longest function in runner/ and hydra_plugins/", str(long[0]) if long else "-", long[:5]),
        (f"functions with more than {MAX_PARAMS} parameters besides self", str(len(params)), params),
        ("Hydra launcher modules", ", ".join(s.what for s in launcher_lines()), []),
        ("import cycles", str(len(cycles)), [Site(" <-> ".join(c), 0, "") for c in cycles]),
        ("global statements", str(len(globals_)), globals_),
        ("module-level mutable state (names)", str(len(names)), names),
    ]


def main(argv: list[str]) -> int:
    for title, value, sites in figures():
        print(f"{title}: {value}")
        if "--list" in argv:
            for site in sites:
                print(f"    {site}")
    if "--tree" in argv:
        print("\n".join(["", *tree()]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
