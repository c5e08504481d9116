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
