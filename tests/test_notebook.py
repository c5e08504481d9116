"""The notebook runs top to bottom on the default config pointed at a local mirror."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.helpers import REPO, TlcServer


@pytest.mark.slow
def test_notebook_runs_top_to_bottom(home: Path, tlc_server: TlcServer, monkeypatch) -> None:
    monkeypatch.delenv("MPLBACKEND", raising=False)
    for key, value in {"TAXIPIPE_HOME": str(home), "TAXIPIPE_DATA__URL_TEMPLATE": tlc_server.url_template,
                       "TAXIPIPE_DATA__YEAR": "2021"}.items():
        monkeypatch.setenv(key, value)
    notebook = nbformat.read(REPO / "examples" / "duration-prediction.ipynb", as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(home.parent)}}).execute()

    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    stderr = [output.text for output in outputs if output.get("name") == "stderr"]
    assert not [text for text in stderr if "Warning" in text], stderr  # e.g. TqdmWarning: IProgress not found
    text = "\n".join(output.get("text", "") for output in outputs if output.output_type == "stream")
    rmse = float(re.search(r"^RMSE: ([\d.]+)$", text, re.M).group(1))
    assert 5.0 < rmse < 6.2
    assert re.search(r"^train: xgboost RMSE [\d.]+ on 2021-02, trained on 2021-01 \(memory; MLflow run \w+\)$", text, re.M) and "deploy: version 1" in text
    assert any("image/png" in output.get("data", {}) for output in outputs)
    assert (home / "mlflow" / "mlflow.db").exists()
