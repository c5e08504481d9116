"""`taxipipe serve`: the champion over HTTP, checked input, metrics, and swaps that drop nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from taxipipe.config import load_settings
from taxipipe.serve.app import create_app
from tests.helpers import (REPO, RIDE, TlcServer, cli_data_flags, free_port, run_cli, serve_settings, wait_for,
                           wait_healthy)


@pytest.fixture
def client(champion_home: Path) -> Iterator[TestClient]:
    with TestClient(create_app(serve_settings(champion_home, batch_limit=20_000))) as test_client:
        yield test_client


@pytest.mark.slow
def test_predictions_equal_mlflow_pyfunc(client: TestClient, champion_home: Path, tlc_dir: Path) -> None:
    import mlflow.pyfunc

    from taxipipe import tracking

    settings = serve_settings(champion_home)
    tracking.client(settings)
    pyfunc = mlflow.pyfunc.load_model(f"models:/{settings.mlflow.model_name}@champion")
    rides = pd.read_parquet(tlc_dir / "green_tripdata_2021-02.parquet",
                            columns=["PULocationID", "DOLocationID", "trip_distance"])
    rides = rides[(rides["trip_distance"] >= 0)].reset_index(drop=True)
    expected = pyfunc.predict(rides)
    served = []
    for start in range(0, len(rides), 20_000):
        chunk = rides.iloc[start:start + 20_000]
        response = client.post("/predict/batch", json={"rides": chunk.to_dict(orient="records")})
        assert response.status_code == 200, response.text
        served.extend(response.json()["durations"])
    assert np.array_equal(np.asarray(served, dtype=np.float32), expected)
    for index in (0, 17, len(rides) - 1):
        one = client.post("/predict", json=rides.iloc[index].to_dict()).json()
        assert np.float32(one["duration_minutes"]) == expected[index]
        assert one["model_version"] == 1 and len(one["run_id"]) == 32


@pytest.mark.parametrize(("body", "field", "rule"), [
    ({"DOLocationID": 168, "trip_distance": 2.5}, "PULocationID", "is required"),
    ({**RIDE, "PULocationID": "74"}, "PULocationID", "must be a whole number"),
    ({**RIDE, "PULocationID": 74.5}, "PULocationID", "must be a whole number"),
    ({**RIDE, "PULocationID": True}, "PULocationID", "must be a whole number"),
    ({**RIDE, "DOLocationID": 0}, "DOLocationID", "must be a zone id in 1..265"),
    ({**RIDE, "DOLocationID": 266}, "DOLocationID", "must be a zone id in 1..265"),
    ({**RIDE, "trip_distance": -0.1}, "trip_distance", "must not be negative"),
    ({**RIDE, "trip_distance": None}, "trip_distance", "must be a number"),
    ({**RIDE, "trip_distance": 1e39}, "trip_distance", "must be at most 1,000,000 miles"),
    ({**RIDE, "trip_distance": 1e300}, "trip_distance", "must be at most 1,000,000 miles"),
    ([RIDE], "body", "must be a JSON object"),
])
def test_bad_ride_is_422_naming_field_and_rule(client: TestClient, body: Any, field: str, rule: str) -> None:
    response = client.post("/predict", json=body)
    assert response.status_code == 422
    answer = response.json()
    assert answer["field"] == field and answer["rule"].startswith(rule)
    assert client.post("/predict", json=RIDE).status_code == 200


def test_non_finite_and_unparsable_bodies_are_422(client: TestClient) -> None:
    text = json.dumps({**RIDE, "trip_distance": float("inf")})
    assert client.post("/predict", content=text).json()["rule"] == "must be a finite number"
    assert client.post("/predict", content=text.replace("Infinity", "NaN")).json()["rule"] == "must be a finite number"
    broken = client.post("/predict", content="{not json")
    assert broken.status_code == 422 and broken.json()["rule"] == "must be valid JSON"


def test_a_distance_beyond_the_bound_is_refused_on_every_endpoint_and_the_bound_is_served(
        client: TestClient) -> None:
    from taxipipe.ride_rules import MAX_MILES

    far = {**RIDE, "trip_distance": 1e39}
    batch = client.post("/predict/batch", json={"rides": [RIDE, far]})
    assert batch.status_code == 422 and batch.json()["field"] == "rides[1].trip_distance"
    for body in ({"dataframe_records": [RIDE, far]},
                 {"dataframe_split": {"columns": list(RIDE), "data": [list(RIDE.values()), list(far.values())]}}):
        answer = client.post("/invocations", json=body)
        assert answer.status_code == 400 and answer.json()["field"] == "rows[1].trip_distance", answer.text
    longest = client.post("/predict", json={**RIDE, "trip_distance": MAX_MILES})
    assert longest.status_code == 200 and np.isfinite(longest.json()["duration_minutes"])


def test_serving_refuses_exactly_the_rides_batch_scoring_and_monitoring_set_aside() -> None:
    import pyarrow as pa

    from taxipipe.ride_rules import MAX_MILES, SetAside
    from taxipipe.serve.rides import RideError, parse_ride

    rides = [RIDE, {**RIDE, "PULocationID": None}, {**RIDE, "PULocationID": 10**9}, {**RIDE, "DOLocationID": 300},
             {**RIDE, "DOLocationID": 0}, {**RIDE, "trip_distance": -0.5}, {**RIDE, "trip_distance": 1e39},
             {**RIDE, "trip_distance": float("inf")}, {**RIDE, "trip_distance": None},
             {**RIDE, "trip_distance": MAX_MILES}, {**RIDE, "trip_distance": 0.0}]
    served = []
    for ride in rides:
        try:
            parse_ride(ride)
            served.append(True)
        except RideError:
            served.append(False)
    table = pa.table({"PULocationID": pa.array([r["PULocationID"] for r in rides], pa.int64()),
                      "DOLocationID": pa.array([r["DOLocationID"] for r in rides], pa.int32()),
                      "trip_distance": pa.array([r["trip_distance"] for r in rides], pa.float64())})
    set_aside = SetAside()
    _, kept = set_aside.split(table)
    assert kept.tolist() == served == [True] + [False] * 8 + [True, True]
    assert set_aside.rides == 8


@pytest.mark.parametrize("kind, features", [("xgboost", "categorical"), ("linear", "onehot"),
                                            ("random_forest", "onehot")])
def test_every_model_kind_answers_a_finite_duration_up_to_the_longest_distance(
        tlc_dir: Path, kind: str, features: str) -> None:
    from taxipipe.features import MODEL_COLUMNS, TARGET, Encoder, add_duration
    from taxipipe.models.registry import get_kind
    from taxipipe.ride_rules import MAX_MILES
    from taxipipe.tlc import read_trips

    rides = add_duration(read_trips(tlc_dir / "green_tripdata_2021-01.parquet", "green")).slice(0, 3000).to_pandas()
    params = {} if kind == "linear" else {"n_estimators": 3}
    model = load_settings(overrides={"model": {"kind": kind, "features": features, "early_stopping_rounds": 2,
                                               "params": params}}).model
    encoder = Encoder.fit(features, rides)
    matrices = (encoder.transform(rides), rides[TARGET].to_numpy())
    fitted = get_kind(kind).train(model, encoder, matrices, matrices, ()).model
    distances = np.array([0.0, 2.5, MAX_MILES])
    zones = rides[MODEL_COLUMNS[0]].to_numpy()[:3]
    minutes = fitted.predict(encoder.encode(zones, zones, distances))
    assert np.all(np.isfinite(minutes)), minutes


def test_whole_floats_and_extra_fields_are_accepted(client: TestClient) -> None:
    plain = client.post("/predict", json=RIDE).json()
    floats = client.post("/predict", json={"PULocationID": 74.0, "DOLocationID": 168.0, "trip_distance": 2.5,
                                           "VendorID": 2}).json()
    assert floats == plain


@pytest.mark.slow
def test_batch_rules(champion_home: Path) -> None:
    with TestClient(create_app(serve_settings(champion_home, batch_limit=3))) as small:
        assert small.post("/predict/batch", json={"rides": [RIDE] * 4}).status_code == 413
        empty = small.post("/predict/batch", json={"rides": []})
        assert empty.status_code == 422 and empty.json()["field"] == "rides"
        bad = small.post("/predict/batch", json={"rides": [RIDE, {**RIDE, "DOLocationID": -3}]}).json()
        assert bad["field"] == "rides[1].DOLocationID"
        assert small.post("/predict/batch", json={"ride": RIDE}).json()["field"] == "rides"
        for bad_ride, field in (({**RIDE, "PULocationID": True}, "PULocationID"),
                                ({**RIDE, "DOLocationID": 10**400}, "DOLocationID"),
                                ({**RIDE, "trip_distance": "2"}, "trip_distance"), ("ride", "rides[1]")):
            answer = small.post("/predict/batch", content=json.dumps({"rides": [RIDE, bad_ride]}))
            assert answer.status_code == 422 and answer.json()["field"].startswith("rides[1]")
            assert answer.json()["field"].endswith(field)
        answer = small.post("/predict/batch", json={"rides": [RIDE, {**RIDE, "trip_distance": 10}]}).json()
        assert answer["rides"] == 2 and answer["durations"][0] != answer["durations"][1]


def test_health_and_metrics(client: TestClient) -> None:
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["version"] == 1 and health["alias"] == "champion"
    assert health["model_name"] == "nyc-taxi-duration" and health["loaded_at"]
    client.post("/predict", json=RIDE)
    client.post("/predict/batch", json={"rides": [RIDE] * 5})
    client.post("/predict", json={})
    metrics = client.get("/metrics").text
    assert 'taxipipe_serve_requests_total{endpoint="/predict",status="200"} 1.0' in metrics
    assert 'taxipipe_serve_requests_total{endpoint="/predict",status="422"} 1.0' in metrics
    assert 'taxipipe_serve_request_seconds_count{endpoint="/predict/batch",status="200"} 1.0' in metrics
    assert "taxipipe_serve_rides_predicted_total 6.0" in metrics
    assert "taxipipe_serve_predicted_minutes_count 6.0" in metrics
    assert "taxipipe_serve_model_version 1.0" in metrics


def test_no_champion_starts_and_answers_503(tmp_path: Path) -> None:
    with TestClient(create_app(serve_settings(tmp_path / "empty-home"))) as empty:
        health = empty.get("/health")
        assert health.status_code == 200 and health.json()["status"] == "no champion"
        response = empty.post("/predict", json=RIDE)
        assert response.status_code == 503
        assert "run the pipeline first" in response.json()["detail"]
        assert empty.post("/predict/batch", json={"rides": [RIDE]}).status_code == 503


def test_unreachable_store_starts_and_says_why(tmp_path: Path) -> None:
    address = f"http://127.0.0.1:{free_port()}"
    settings = load_settings(overrides={"home": str(tmp_path / "home"), "mlflow": {"tracking_uri": address}})
    with TestClient(create_app(settings)) as service:
        health = service.get("/health").json()
        assert health["status"] == "no champion"
        assert health["detail"].startswith("the champion cannot be looked up") and address in health["detail"]
        answer = service.post("/predict", json=RIDE)
        assert answer.status_code == 503 and answer.json()["detail"] == health["detail"]


@pytest.mark.slow
def test_admin_reload_follows_the_alias(champion_home: Path) -> None:
    from taxipipe import tracking

    settings = serve_settings(champion_home, reload_seconds=3600)
    registry = tracking.client(settings)
    name = settings.mlflow.model_name
    with TestClient(create_app(settings)) as service:
        first = service.get("/health").json()["version"]
        current = registry.get_model_version(name, str(first))
        copy = registry.create_model_version(name, current.source, run_id=current.run_id)
        registry.set_registered_model_alias(name, tracking.CHAMPION, copy.version)
        try:
            assert service.get("/health").json()["version"] == first
            assert service.post("/admin/reload").json()["version"] == int(copy.version)
            assert service.post("/predict", json=RIDE).json()["model_version"] == int(copy.version)
        finally:
            registry.set_registered_model_alias(name, tracking.CHAMPION, str(first))


@pytest.mark.slow
def test_served_champion_switches_through_a_deploy_without_a_failed_request(
        tmp_path: Path, tlc_server: TlcServer) -> None:
    """No champion -> 503; `taxipipe run` deploys one; a second deploy swaps it under load."""
    home, port = tmp_path / "home", free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAXIPIPE_")}
    env.update(TAXIPIPE_SERVE__RELOAD_SECONDS="1")
    process = subprocess.Popen([sys.executable, "-m", "taxipipe", "serve", "--home", str(home), "--port",
                                str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                               cwd=REPO)
    import httpx

    try:
        wait_healthy(url, process)
        with httpx.Client(base_url=url, timeout=10) as http:
            assert http.post("/predict", json=RIDE).status_code == 503
            weak = {**env, "TAXIPIPE_MODEL__PARAMS__N_ESTIMATORS": "10"}  # so the second run beats it
            first = run_cli("run", *cli_data_flags(home, tlc_server), env=weak)
            assert first.returncode == 0, first.stderr
            wait_for(lambda: http.get("/health").json().get("version") == 1, "serving version 1", 30, interval=0.2)
            answers: list[tuple[int, Any]] = []
            stop = threading.Event()

            def load() -> None:
                with httpx.Client(base_url=url, timeout=10) as loop:
                    while not stop.is_set():
                        single = loop.post("/predict", json=RIDE)
                        batch = loop.post("/predict/batch", json={"rides": [RIDE] * 100})
                        answers.append((single.status_code, single.json().get("model_version")))
                        answers.append((batch.status_code, batch.json().get("model_version")))

            worker = threading.Thread(target=load)
            worker.start()
            try:
                second = run_cli("run", *cli_data_flags(home, tlc_server, month=2), env=env)
                assert second.returncode == 0, second.stderr
                wait_for(lambda: http.get("/health").json().get("version") == 2, "serving version 2", 30,
                         interval=0.2)
                time.sleep(1)
            finally:
                stop.set()
                worker.join()
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0]
    assert [status for status, _ in answers if status != 200] == []
    versions = [version for _, version in answers]
    assert versions[0] == 1 and versions[-1] == 2 and versions == sorted(versions)
    assert "serving nyc-taxi-duration version 2" in output


def test_docs_page_needs_nothing_but_the_server(client: TestClient) -> None:
    import re

    page = client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    links = re.findall(r"""(?:src|href|action)=['"]([^'"]*)""", page.text)
    assert links and all(not re.match(r"[a-z]+:|//", link) for link in links), links
    assert "<script src" not in page.text and "@import" not in page.text
    for path in client.get("/openapi.json").json()["paths"]:
        assert f"data-path='{path}'" in page.text
    assert client.get("/redoc").status_code == 404
