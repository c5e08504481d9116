"""Content fingerprints: of files (re-hashed only when their size or mtime moved), of a
step's code, and of JSON-able values. The make runner compares them to decide what reruns.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import inspect
import json
import sys
import textwrap
import types
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import taxipipe


@dataclass(frozen=True)
class FileState:
    """A file's content hash and the stat figures that let later runs skip re-hashing it."""

    sha256: str
    size: int
    mtime_ns: int

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FileState:
        return cls(data["sha256"], data["size"], data["mtime_ns"])


class FileHasher:
    """Hashes files, trusting a known hash while the file's size and mtime are unchanged."""

    def __init__(self, known: Mapping[str, FileState]) -> None:
        self.known = dict(known)
        self.rehashed: dict[str, FileState] = {}

    def state(self, key: str, path: Path, trust_stat: bool = True) -> FileState | None:
        """The state of `path` (recorded under `key`), or None when it does not exist.

        `trust_stat=False` hashes even an unchanged-looking file (one a step just wrote).
        """
        try:
            stat = path.stat()
        except FileNotFoundError:
            return None
        known = self.known.get(key)
        if trust_stat and known is not None and (known.size, known.mtime_ns) == (stat.st_size, stat.st_mtime_ns):
            return known
        with open(path, "rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
        state = FileState(digest, stat.st_size, stat.st_mtime_ns)
        self.known[key] = self.rehashed[key] = state
        return state


def value_fingerprint(value: Any) -> str:
    """A stable hash of a JSON-able value."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@functools.cache
def code_fingerprint(func: Callable[..., Any]) -> str:
    """A hash of what decides a step's behaviour.

    It covers the package version, the step function's source, the sources of the helpers of
    its own module that it calls (transitively), and the files of the taxipipe modules it
    imports, and of those they import in turn. Editing a docstring there counts as a change;
    editing an unrelated step does not.
    """
    digest = hashlib.sha256(taxipipe.__version__.encode())
    sources = [inspect.getsource(helper) for helper in _helpers(func)]
    for text in sources:
        digest.update(text.encode())
    modules = _module_files({name for source in sources for name in _taxipipe_imports(source)})
    for name, path in sorted(modules.items()):
        digest.update(name.encode() + path.read_bytes())
    return digest.hexdigest()


def _module_files(names: set[str]) -> dict[str, Path]:
    """The files of these taxipipe modules and of every taxipipe module they import."""
    files: dict[str, Path] = {}
    pending = list(names)
    while pending:
        name = pending.pop()
        if name in files:
            continue
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            continue
        files[name] = Path(spec.origin)
        pending.extend(_taxipipe_imports(files[name].read_text()))
    return files


def _helpers(func: Callable[..., Any]) -> list[Callable[..., Any]]:
    """`func` and the functions of its module it refers to, directly or through each other."""
    module = sys.modules[func.__module__]
    found: dict[str, Callable[..., Any]] = {}
    pending = [func]
    while pending:
        current = pending.pop()
        if current.__name__ in found:
            continue
        found[current.__name__] = current
        for name in _global_names(current.__code__):
            candidate = getattr(module, name, None)
            if inspect.isfunction(candidate) and candidate.__module__ == module.__name__:
                pending.append(candidate)
    return [found[name] for name in sorted(found)]


def _global_names(code: types.CodeType) -> Iterator[str]:
    """The global names a code object uses, including those of nested comprehensions."""
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _global_names(const)


def _taxipipe_imports(source: str) -> set[str]:
    """The taxipipe modules imported inside a function's source (`from taxipipe.x import y`)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(textwrap.dedent(source))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "taxipipe":
            names.add(node.module)
            if node.module == "taxipipe":
                names.update(f"taxipipe.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names if alias.name.split(".")[0] == "taxipipe")
    return names
