"""The package's layers (pyproject's import-linter contracts): none imported upward, no engine
folder importing another, and no import circle at all."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.helpers import REPO

PACKAGE = REPO / "src" / "taxipipe"


def layered_modules() -> set[str]:
    contracts = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    [layers] = [contract["layers"] for contract in contracts if contract["type"] == "layers"]
    return {name.strip() for layer in layers for name in re.split(r"[|:]", layer)}


def import_circles(package: str) -> list[list[str]]:
    """Each set of modules of `package` that import one another in a circle (Tarjan's strongly
    connected components), counting imports inside functions and under TYPE_CHECKING."""
    import grimp

    graph = grimp.build_graph(package, cache_dir=None)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while not component or component[-1] != module:
                component.append(stack.pop())
            if len(component) > 1:
                circles.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return circles


def test_every_module_imports_only_the_layers_below_its_own() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "2 kept, 0 broken" in result.stdout


def test_no_module_imports_itself_through_others() -> None:
    """Layers allow imports within a layer; a circle is still refused, lazy and type-only too."""
    assert import_circles("taxipipe") == []


def test_a_circle_through_a_lazy_and_a_type_only_import_is_found(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "circled"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from circled import b\n")
    (package / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from circled import a\n")
    (package / "c.py").write_text("from circled import a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert import_circles("circled") == [["circled.a", "circled.b"]]


def test_every_module_and_package_has_a_layer() -> None:
    named = layered_modules()
    for path in sorted(PACKAGE.iterdir()):
        if path.name.startswith(("_", ".")) and path.name != "__main__.py":
            continue
        module = f"taxipipe.{path.stem}"
        if path.is_dir() and (path / "__init__.py").exists() and module not in named:
            assert {f"{module}.{child.stem}" for child in path.glob("*.py") if child.stem != "__init__"} <= named, module
        elif path.suffix == ".py":
            assert module in named, f"{module} is in no layer of pyproject's [tool.importlinter] contract"


def test_every_taxipipe_import_names_a_module_that_exists() -> None:
    """Imports inside functions run late: a renamed module must not leave one behind."""
    import ast
    import importlib.util

    missing = []
    for folder in ("src", "tests", "dags", "examples", "benchmarks"):
        for path in sorted((REPO / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                names = ([node.module] if isinstance(node, ast.ImportFrom) and node.module else
                         [alias.name for alias in node.names] if isinstance(node, ast.Import) else [])
                for name in names:
                    if name.split(".")[0] == "taxipipe" and importlib.util.find_spec(name) is None:
                        missing.append(f"{path.relative_to(REPO)}:{node.lineno} {name}")
    assert not missing, missing
