"""scripts/check_refs.py (run by `make lint`): a docstring or comment naming a module that does not
exist fails the check; one naming a real module or one of its names passes."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _check_refs():
    spec = importlib.util.spec_from_file_location("check_refs", ROOT / "scripts" / "check_refs.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_refs"] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


def _tree(tmp_path: Path, source: str) -> Path:
    pkg = tmp_path / "runner" / "core"
    pkg.mkdir(parents=True)
    (tmp_path / "runner" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "layout.py").write_text('"""Names."""\nMANIFEST = "manifest.json"\n')
    (pkg / "user.py").write_text(source)
    return tmp_path


def test_this_tree_names_only_modules_that_exist():
    assert _check_refs().main([str(ROOT)]) == 0


def test_a_stale_module_in_a_docstring_fails(tmp_path, capsys):
    root = _tree(tmp_path, '"""See :mod:`runner.layout` for the names."""\n')
    assert _check_refs().main([str(root)]) == 1
    assert "runner/core/user.py:1: :mod:`runner.layout`" in capsys.readouterr().out


def test_a_missing_name_in_a_comment_fails(tmp_path, capsys):
    root = _tree(tmp_path, "# runner.core.layout.MANIFEST and runner.core.layout.RESULT\nX = 1\n")
    assert _check_refs().main([str(root)]) == 1
    out = capsys.readouterr().out
    assert "runner.core.layout.RESULT" in out and "MANIFEST" not in out


def test_real_modules_and_names_pass(tmp_path):
    source = (
        '"""Reads :mod:`runner.core.layout` (``python -m runner.core.layout``, :mod:`json`).\n\n'
        'A file named ``.runner.lock`` is not a module."""\n'
        "# :data:`runner.core.layout.MANIFEST`\n"
        'MESSAGE = "runner.no_such_module in a plain string is not prose"\n'
    )
    assert _check_refs().main([str(_tree(tmp_path, source))]) == 0
