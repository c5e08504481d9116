"""The package's layers (pyproject's import-linter contract): no import circle, none upward."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "src" / "taxipipe"


def layered_modules() -> set[str]:
    [contract] = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    return {name.strip() for layer in contract["layers"] for name in layer.split("|")}


def test_every_module_imports_only_the_layers_below_its_own() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "1 kept, 0 broken" in result.stdout


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
