"""`taxipipe serve` as a drop-in for `mlflow models serve`: /invocations, /ping, /version."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import httpx
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from taxipipe.serve.app import create_app
from tests.helpers import REPO, RIDE, free_port, serve_settings, store_uri, wait_healthy

COLUMNS = ["PULocationID", "DOLocationID", "trip_distance"]
JSON = {"Content-Type": "application/json"}
CSV = {"Content-Type": "text/csv"}
PARQUET = {"Content-Type": "application/vnd.apache.parquet"}


@pytest.fixture(scope="module")
def rides(tlc_dir: Path) -> pd.DataFrame:
    frame = pd.read_parquet(tlc_dir / "green_tripdata_2021-02.parquet", columns=COLUMNS).dropna()
    return frame[frame["trip_distance"] >= 0].sample(500, random_state=7).reset_index(drop=True)


def payloads(rides: pd.DataFrame) -> dict[str, tuple[bytes, dict[str, str]]]:
    """The same rides in each form a client of `mlflow models serve` sends."""
    records = rides.to_dict(orient="records")
    columns = rides.to_dict(orient="list")
    forms = {
        "dataframe_split": {"dataframe_split": rides.to_dict(orient="split")},
        "dataframe_records": {"dataframe_records": records},
        "inputs": {"inputs": columns},
        "instances": {"instances": records},
    }
    bodies = {name: (json.dumps(body).encode(), JSON) for name, body in forms.items()}
    bodies["csv"] = (rides.to_csv(index=False).encode(), CSV)
    bodies["parquet"] = (rides.to_parquet(), PARQUET)
    return bodies


@pytest.fixture
def client(champion_home: Path) -> Iterator[TestClient]:
    with TestClient(create_app(serve_settings(champion_home))) as test_client:
        yield test_client


def test_every_form_and_csv_give_the_pyfunc_predictions(client: TestClient, champion_home: Path,
                                                        rides: pd.DataFrame) -> None:
    import mlflow.pyfunc

    from taxipipe import tracking

    settings = serve_settings(champion_home)
    tracking.client(settings)
    expected = mlflow.pyfunc.load_model(f"models:/{settings.mlflow.model_name}@champion").predict(rides)
    for name, (body, headers) in payloads(rides).items():
        answer = client.post("/invocations", content=body, headers=headers)
        assert answer.status_code == 200, (name, answer.text)
        assert np.array_equal(np.asarray(answer.json()["predictions"], dtype=np.float32), expected), name
    pandas_csv = client.post("/invocations", content=rides.to_csv().encode(), headers=CSV)  # with its index column
    assert np.array_equal(np.asarray(pandas_csv.json()["predictions"], dtype=np.float32), expected)
    one = client.post("/invocations", json={"inputs": RIDE}).json()["predictions"]
    assert one == [client.post("/predict", json=RIDE).json()["duration_minutes"]]


@pytest.mark.parametrize(("body", "headers", "field"), [
    ({"dataframe_records": [RIDE, {**RIDE, "DOLocationID": 0}]}, JSON, "rows[1].DOLocationID"),
    ({"dataframe_split": {"columns": COLUMNS, "data": [[74, 168, 2.5], [74, 168, -1]]}}, JSON, "rows[1].trip_distance"),
    ({"inputs": {"PULocationID": [74, "74"], "DOLocationID": [1, 2], "trip_distance": [1, 2]}}, JSON,
     "rows[1].PULocationID"),
    ({"instances": [RIDE, {"PULocationID": 74, "DOLocationID": 168}]}, JSON, "rows[1].trip_distance"),
    ("PULocationID,DOLocationID,trip_distance\n74,168,2.5\n74,168.5,2.5\n", CSV, "rows[1].DOLocationID"),
    ("PULocationID,DOLocationID,trip_distance\n74,168,2.5\n74,168,\n", CSV, "rows[1].trip_distance"),
])
def test_a_bad_ride_is_400_naming_row_and_field(client: TestClient, body: Any, headers: dict[str, str],
                                                field: str) -> None:
    content = body if isinstance(body, str) else json.dumps(body)
    answer = client.post("/invocations", content=content, headers=headers)
    assert answer.status_code == 400
    error = answer.json()
    assert error["error_code"] == "BAD_REQUEST" and error["field"] == field
    assert error["message"].startswith(f"Invalid input. {field} ")


@pytest.mark.parametrize(("content", "headers", "status", "start"), [
    (json.dumps([RIDE]), JSON, 400, "Invalid input. The input must be a JSON dictionary"),
    (json.dumps({"inputs": [RIDE], "instances": [RIDE]}), JSON, 400, "The input must be a JSON dictionary"),
    (json.dumps({"rides": [RIDE]}), JSON, 400, "The input must be a JSON dictionary"),
    ("{not json", JSON, 400, "Invalid input. Ensure that input is a valid JSON formatted string"),
    ("[" * 100_000 + "]" * 100_000, JSON, 400, "Invalid input. Ensure that input is a valid JSON"),
    (json.dumps({"dataframe_split": [1]}), JSON, 400, "Invalid input. Dataframe split format must be a dictionary"),
    (json.dumps({"dataframe_records": {"a": 1}}), JSON, 400, "Invalid input. Dataframe records format must be a list"),
    (json.dumps({"dataframe_records": []}), JSON, 400, "Invalid input. rows must hold at least one ride"),
])
def test_requests_mlflow_refuses_get_its_answer(client: TestClient, content: str, headers: dict[str, str],
                                                status: int, start: str) -> None:
    answer = client.post("/invocations", content=content, headers=headers)
    assert answer.status_code == status
    assert answer.json()["error_code"] == "BAD_REQUEST" and answer.json()["message"].startswith(start)


def test_a_broken_parquet_body_is_400(client: TestClient) -> None:
    answer = client.post("/invocations", content=b"PAR1 not really", headers=PARQUET)
    assert answer.status_code == 400 and answer.json()["message"].startswith("Failed to parse input")


def test_content_types_and_probes_as_mlflow(client: TestClient) -> None:
    xml = client.post("/invocations", content="<a/>", headers={"Content-Type": "application/xml"})
    assert xml.status_code == 415 and xml.text.startswith("This predictor only supports the following content types")
    latin = client.post("/invocations", content="{}", headers={"Content-Type": "application/json; charset=latin-1"})
    assert latin.status_code == 415 and latin.text == "The scoring server only supports UTF-8"
    assert client.get("/ping").status_code == 200
    from importlib.metadata import version

    assert client.get("/version").text == version("mlflow")
    client.post("/invocations", json={"inputs": [RIDE] * 3})
    metrics = client.get("/metrics").text
    assert 'taxipipe_serve_requests_total{endpoint="/invocations",status="200"} 1.0' in metrics
    assert "taxipipe_serve_rides_predicted_total 3.0" in metrics


def test_over_the_batch_limit_is_413(champion_home: Path) -> None:
    with TestClient(create_app(serve_settings(champion_home, batch_limit=2))) as small:
        answer = small.post("/invocations", json={"dataframe_records": [RIDE] * 3})
        assert answer.status_code == 413 and "serve.batch_limit" in answer.json()["message"]


def test_no_champion_is_503_with_the_reason(tmp_path: Path) -> None:
    with TestClient(create_app(serve_settings(tmp_path / "empty"))) as empty:
        assert empty.get("/ping").status_code == 503
        answer = empty.post("/invocations", json={"inputs": [RIDE]})
        assert answer.status_code == 503 and "run the pipeline first" in answer.json()["message"]


@pytest.mark.slow
def test_same_answers_as_mlflow_models_serve(champion_home: Path, rides: pd.DataFrame) -> None:
    """A client of `mlflow models serve` gets the same from `taxipipe serve` on the same champion."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TAXIPIPE_", "MLFLOW_"))}  # earlier tests set some
    env.update(MLFLOW_TRACKING_URI=store_uri(champion_home),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}", MLFLOW_DISABLE_TELEMETRY="true")
    ours, theirs = free_port(), free_port()
    servers = [
        subprocess.Popen([sys.executable, "-m", "taxipipe", "serve", "--home", str(champion_home), "--port",
                          str(ours)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO),
        subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/nyc-taxi-duration@champion",
                          "--env-manager", "local", "-h", "127.0.0.1", "-p", str(theirs)],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO),
    ]
    try:
        wait_healthy(f"http://127.0.0.1:{ours}", servers[0])
        wait_healthy(f"http://127.0.0.1:{theirs}", servers[1], seconds=180)
        bodies = payloads(rides)
        with httpx.Client(timeout=60) as http:
            def both(path: str, content: bytes, headers: dict[str, str]) -> list[httpx.Response]:
                return [http.post(f"http://127.0.0.1:{port}{path}", content=content, headers=headers)
                        for port in (ours, theirs)]

            for name in ("dataframe_split", "dataframe_records", "inputs", "instances", "parquet"):
                mine, mlflow = both("/invocations", *bodies[name])
                assert mine.status_code == mlflow.status_code == 200, (name, mine.text, mlflow.text)
                assert mine.json() == mlflow.json(), name
            csv = http.post(f"http://127.0.0.1:{ours}/invocations", content=bodies["csv"][0], headers=CSV)
            assert csv.json() == mine.json()
            for content, headers in ((json.dumps([RIDE]).encode(), JSON), (b"{not json", JSON),
                                     (json.dumps({"inputs": [RIDE], "instances": [RIDE]}).encode(), JSON),
                                     (b"<a/>", {"Content-Type": "application/xml"})):
                mine, mlflow = both("/invocations", content, headers)
                assert mine.status_code == mlflow.status_code, (content, mine.text, mlflow.text)
                assert mine.headers["content-type"] == mlflow.headers["content-type"]
                if mine.status_code == 400:
                    assert mine.json()["error_code"] == mlflow.json()["error_code"]
                    assert mine.json()["message"][:40] == mlflow.json()["message"][:40]
            for probe in ("/ping", "/version"):
                mine, mlflow = (http.get(f"http://127.0.0.1:{port}{probe}") for port in (ours, theirs))
                assert (mine.status_code, mine.text) == (mlflow.status_code, mlflow.text), probe
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            server.communicate(timeout=60)


def test_a_csv_without_a_header_and_a_huge_number_get_the_right_words(client: TestClient) -> None:
    headerless = client.post("/invocations", content="74,168,2.5\n75,1,1.0\n", headers=CSV)
    assert headerless.status_code == 400 and headerless.json()["field"] == "csv"
    assert headerless.json()["message"] == ("Invalid input. csv must start with a header row naming the columns "
                                            "PULocationID, DOLocationID, trip_distance")
    huge = '{"PULocationID": ' + "7" * 5000 + ', "DOLocationID": 168, "trip_distance": 2.5}'
    answer = client.post("/predict", content=huge)
    assert answer.status_code == 422 and answer.json()["detail"] == (
        "body must not hold a whole number of more than 4,300 digits")
    scoring = client.post("/invocations", content='{"inputs": [' + huge + "]}", headers=JSON)
    assert scoring.status_code == 400 and scoring.json()["message"].endswith(
        "Error: it must not hold a whole number of more than 4,300 digits")


def test_csv_and_parquet_rows_are_counted_before_they_are_decoded(champion_home: Path) -> None:
    """Rows past the limit are never read: a broken row there does not change the answer from 413."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with TestClient(create_app(serve_settings(champion_home, batch_limit=100))) as small:
        csv = "PULocationID,DOLocationID,trip_distance\n" + "74,168,2.5\n" * 150 + "74,168\n"
        answer = small.post("/invocations", content=csv, headers=CSV)
        assert answer.status_code == 413 and answer.json()["message"] == (
            "Invalid input. rows must hold at most 100 rides (serve.batch_limit); got 151")
        assert small.post("/invocations", content=csv.replace("2.5\n", "2.5\r", 150), headers=CSV).status_code == 413
        rides = pa.table({"PULocationID": [74] * 40, "DOLocationID": [168] * 40, "trip_distance": [2.5] * 40})
        bodies = []
        for table in (rides, rides.set_column(0, "PULocationID", pa.array(["74"] * 40))):
            sink = pa.BufferOutputStream()
            pq.write_table(table, sink)
            bodies.append(sink.getvalue().to_pybytes())
        assert small.post("/invocations", content=bodies[0], headers=PARQUET).status_code == 200
        text = small.post("/invocations", content=bodies[1], headers=PARQUET)
        assert text.status_code == 400 and text.json()["message"] == (
            "Invalid input. rows.PULocationID must be a column of integers or floating-point numbers")
    with TestClient(create_app(serve_settings(champion_home, batch_limit=39))) as smaller:
        answer = smaller.post("/invocations", content=bodies[1], headers=PARQUET)
        assert answer.status_code == 413 and answer.json()["message"].endswith("got 40")
