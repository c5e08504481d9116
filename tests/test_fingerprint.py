"""The one staleness rule, on a copy of the package: what an edit makes stale under make and
Prefect alike."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from taxipipe.config import load_settings
from taxipipe.fingerprint import fingerprint
from taxipipe.pipeline import BY_NAME, graph
from tests.helpers import REPO

#: Prints, for each node, the code part of its fingerprint and its Prefect cache key.
PRINT_FINGERPRINTS = """
import json, sys
import taxipipe
from taxipipe.config import load_settings
from taxipipe.fingerprint import cache_key, fingerprint
from taxipipe.pipeline import graph

settings = load_settings(overrides={"home": sys.argv[1]})
print(json.dumps({"package": taxipipe.__file__, "steps": {
    step.name: [fingerprint(step, settings, {}).code, cache_key(step.step_name, settings, {})]
    for step in graph(settings) if not step.per_month}}))
"""


def fingerprints(package_root: Path, home: Path) -> dict[str, list[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAXIPIPE_")}
    env["PYTHONPATH"] = str(package_root)
    result = subprocess.run([sys.executable, "-c", PRINT_FINGERPRINTS, str(home)], capture_output=True,
                            text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    printed = json.loads(result.stdout.strip().splitlines()[-1])
    assert printed["package"].startswith(str(package_root)), "the copy must be the package imported"
    return printed["steps"]


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_an_edit_of_a_helper_module_reruns_the_steps_that_use_it(tmp_path: Path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(REPO / "src" / "taxipipe", root / "taxipipe", ignore=shutil.ignore_patterns("__pycache__"))
    home = tmp_path / "home"
    before = fingerprints(root, home)

    edit(root / "taxipipe" / "features.py", "    hit = sorted_values[found] == values\n",
         "    hit = (sorted_values[found] == values)\n")
    after_features = fingerprints(root, home)
    changed = {name for name in before if after_features[name][0] != before[name][0]}
    assert changed == {"transform", "features", "train", "validate_model", "save", "deploy"}, \
        "the steps that import taxipipe.features, directly or through another taxipipe module"
    assert changed == {name for name in before if after_features[name][1] != before[name][1]}, \
        "the Prefect cache key misses exactly where make reruns"

    edit(root / "taxipipe" / "tracking" / "registry.py", "CHAMPION = \"champion\"\n", "CHAMPION = 'champion'\n")
    after_tracking = fingerprints(root, home)
    assert {name for name in before if after_tracking[name] != after_features[name]} == {
        "train", "validate_model", "save", "deploy"}


def test_the_fingerprint_covers_config_inputs_and_upstream(tmp_path: Path) -> None:
    settings = load_settings(overrides={"home": str(tmp_path), "data": {"year": 2021, "month": 1}})
    train = BY_NAME["train"]
    first = fingerprint(train, settings, {"features": {"rows": 1, "seconds": 1.0}})
    assert first.config["model.params.max_depth"] == 6
    assert set(first.inputs) == {"partitions/green/2021-01/encoder.json",
                                 "partitions/green/2021-01/train_features.bin",
                                 "partitions/green/2021-01/validation_features.bin"}
    assert fingerprint(train, settings, {"features": {"rows": 1, "seconds": 9.0}}).digest() == first.digest()
    assert fingerprint(train, settings, {"features": {"rows": 2}}).digest() != first.digest()
    deeper = load_settings(overrides={"home": str(tmp_path), "data": {"year": 2021, "month": 1},
                                      "model": {"params": {"max_depth": 3}}})
    assert fingerprint(train, deeper, {"features": {"rows": 1}}).digest() != first.digest()
    assert fingerprint(BY_NAME["transform"], deeper, {}).digest() == fingerprint(BY_NAME["transform"], settings, {}).digest()
    (tmp_path / "partitions" / "green" / "2021-01").mkdir(parents=True)
    (tmp_path / "partitions" / "green" / "2021-01" / "encoder.json").write_text("{}")
    assert fingerprint(train, settings, {"features": {"rows": 1}}).digest() != first.digest()
    [month] = [node for node in graph(settings) if node.name == "extract[2021-02]"]
    assert fingerprint(month, settings, {}).inputs == {}


def test_naming_the_steps_files_probes_no_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The feature files have one name whatever the compute mode, so no memory probe runs to
    name them; the mode `features` chose reaches train in its record only."""
    from taxipipe import compute

    def probe() -> int:
        raise AssertionError("a memory probe ran to name a file")

    monkeypatch.setattr(compute, "available_bytes", probe)
    settings = load_settings(overrides={"home": str(tmp_path), "data": {"year": 2021, "month": 1}})
    printed = {step.name: fingerprint(step, settings, {}) for step in graph(settings)}
    assert set(printed["features"].inputs) == {"partitions/green/2021-01/train_clean.parquet",
                                               "partitions/green/2021-01/validation_clean.parquet"}
    assert {key for key in printed["train"].inputs if "features" in key} == {
        "partitions/green/2021-01/train_features.bin", "partitions/green/2021-01/validation_features.bin"}
