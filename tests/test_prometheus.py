"""The shipped Prometheus configuration, alert rules and Grafana dashboard, checked by Debian's
`prometheus` package: promtool, then a real Prometheus scraping a real `taxipipe serve`."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from tests.helpers import REPO, TlcServer, cli_data_flags, free_port, run_cli, wait_for, wait_healthy

PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
CONFIG = PROMETHEUS_DIR / "prometheus.yml"
RULES = PROMETHEUS_DIR / "taxipipe-alerts.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "taxipipe-serve.json"
#: An alert expression is one signal compared with one number (the rules file's convention).
ALERT_SHAPE = re.compile(r"(?s)(?P<signal>.*\S)\s*(?P<op>>|<)\s*(?P<threshold>[0-9.]+)")
RIDE = {"PULocationID": 74, "DOLocationID": 168, "trip_distance": 2.5}


def _tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is missing: `make test` installs Debian's prometheus package when run as root"
    return path


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def dashboard_expressions() -> list[str]:
    """Every panel query, with Grafana's rate interval as Grafana would fill it in at a 1 s scrape."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"].replace("$__rate_interval", "1m") for panel in panels for target in panel["targets"]]


def test_promtool_accepts_the_config_and_the_rules() -> None:
    promtool = _tool("promtool")
    config = subprocess.run([promtool, "check", "config", str(CONFIG)], capture_output=True, text=True)
    assert config.returncode == 0 and "1 rule files found" in config.stdout, config.stdout + config.stderr
    rules = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in rules.stdout


def test_every_alert_is_one_signal_against_a_threshold_and_the_dashboard_has_no_unknown_variables() -> None:
    names = {rule["alert"] for rule in alert_rules()}
    assert {"TaxipipeLatencyP99High", "TaxipipeErrorRateHigh", "TaxipipeNoChampion", "TaxipipeChampionReloadFailing",
            "TaxipipeModelOld", "TaxipipeDrift"} <= names
    assert all(ALERT_SHAPE.fullmatch(rule["expr"].strip()) for rule in alert_rules())
    assert all("$" not in expr for expr in dashboard_expressions())


def _gauges(page: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {sample.name: sample.value for family in text_string_to_metric_families(page)
            for sample in family.samples if not sample.labels}


@pytest.mark.slow
def test_the_champion_gauges_the_alerts_read(champion_home: Path, tmp_path: Path) -> None:
    """Served: its version and registration time, no failing lookup; an unreachable store: none, failing."""
    from fastapi.testclient import TestClient

    from taxipipe import tracking
    from taxipipe.config import load_settings
    from taxipipe.serve.app import create_app

    settings = load_settings(overrides={"home": str(champion_home)})
    version = tracking.client(settings).get_model_version(settings.mlflow.model_name, "1")
    with TestClient(create_app(settings)) as service:
        served = _gauges(service.get("/metrics").text)
    assert served["taxipipe_serve_model_version"] == 1
    assert served["taxipipe_serve_model_registered_timestamp_seconds"] == version.creation_timestamp / 1000
    assert served["taxipipe_serve_champion_lookup_failing"] == 0
    unreachable = load_settings(overrides={"home": str(tmp_path / "home"),
                                           "mlflow": {"tracking_uri": f"http://127.0.0.1:{free_port()}"}})
    with TestClient(create_app(unreachable)) as service:
        failing = _gauges(service.get("/metrics").text)
    assert failing["taxipipe_serve_model_version"] == 0
    assert failing["taxipipe_serve_model_registered_timestamp_seconds"] == 0
    assert failing["taxipipe_serve_champion_lookup_failing"] == 1


class PrometheusApi:
    def __init__(self, url: str) -> None:
        self.url = url

    def get(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=30) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.get("/api/v1/query", query=expr)
        assert data["resultType"] == "vector", data
        return data["result"]

    def wait_for_series(self, expr: str, seconds: float = 180) -> list[dict[str, Any]]:
        """The series `expr` returns, polled until there is at least one."""
        return wait_for(lambda: self.query(expr), f"Prometheus has a series for {expr}", seconds, interval=0.5)


@contextmanager
def running_prometheus(workdir: Path, target: str) -> Iterator[PrometheusApi]:
    """Debian's Prometheus on 127.0.0.1 with the shipped config aimed at `target`, scraping every second."""
    config = yaml.safe_load(CONFIG.read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(RULES)]
    [job] = config["scrape_configs"]
    job["static_configs"] = [{"targets": [target]}]
    workdir.mkdir()
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (workdir / "prometheus.log").open("w")
    process = subprocess.Popen([_tool("prometheus"), f"--config.file={workdir / 'prometheus.yml'}",
                                f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                               stdout=log, stderr=subprocess.STDOUT)
    api = PrometheusApi(f"http://127.0.0.1:{port}")

    def ready() -> bool:
        assert process.poll() is None, (workdir / "prometheus.log").read_text()
        try:
            with urllib.request.urlopen(f"{api.url}/-/ready", timeout=5) as response:
                return response.status == 200
        except OSError:
            return False

    try:
        wait_for(ready, "Prometheus is ready", 120, interval=0.5)
        yield api
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.mark.slow
def test_prometheus_scrapes_serve_and_evaluates_every_alert_and_panel(
        champion_home: Path, tlc_server: TlcServer, tmp_path: Path) -> None:
    monitor = run_cli("monitor", *cli_data_flags(champion_home, tlc_server, year=2023, month=2))
    assert monitor.returncode == 3, monitor.stdout + monitor.stderr
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    serve = subprocess.Popen([sys.executable, "-m", "taxipipe", "serve", "--home", str(champion_home),
                              "--port", str(port), "--workers", "2"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    import httpx

    try:
        wait_healthy(url, serve, seconds=180)
        with running_prometheus(tmp_path / "prometheus", f"127.0.0.1:{port}") as prometheus, \
                httpx.Client(base_url=url, timeout=30) as http:
            for _ in range(10):
                assert http.post("/predict", json=RIDE).status_code == 200
                assert http.post("/predict/batch", json={"rides": [RIDE] * 20}).status_code == 200
            assert http.post("/predict", json={}).status_code == 422
            [up] = prometheus.wait_for_series('up{job="taxipipe"} == 1')
            assert up["metric"]["instance"] == f"127.0.0.1:{port}"
            predicted = prometheus.wait_for_series('taxipipe_serve_rides_predicted_total{job="taxipipe"} >= 210')
            assert sum(float(series["value"][1]) for series in predicted) == 210
            [drifted] = prometheus.wait_for_series("taxipipe_monitor_drifted")
            assert drifted["metric"]["month"] == "2023-02" and drifted["value"][1] == "1"

            for expr in dashboard_expressions():  # each has a series, or the wait fails naming it
                prometheus.wait_for_series(expr)
            for rule in alert_rules():
                prometheus.query(rule["expr"])  # evaluates without error
                shape = ALERT_SHAPE.fullmatch(rule["expr"].strip())
                signal = f"{shape['signal']} {shape['op']} bool {shape['threshold']}"
                prometheus.wait_for_series(signal)
            [drift] = prometheus.wait_for_series('ALERTS{alertname="TaxipipeDrift", alertstate="firing"}')
            assert drift["metric"]["month"] == "2023-02" and drift["metric"]["severity"] == "warning"
            alerts = {series["metric"]["alertname"] for series in prometheus.query("ALERTS")}
            assert not alerts & {"TaxipipeServiceDown", "TaxipipeNoChampion", "TaxipipeChampionReloadFailing",
                                 "TaxipipeModelOld"}, alerts
            rules = _wait_for_evaluated_rules(prometheus)
    finally:
        serve.terminate()
        serve.communicate(timeout=60)
    assert {rule["name"] for rule in rules} == {rule["alert"] for rule in alert_rules()}
    assert all(rule["health"] == "ok" and not rule.get("lastError") for rule in rules), rules


def _wait_for_evaluated_rules(prometheus: PrometheusApi, seconds: float = 120) -> list[dict[str, Any]]:
    """The loaded rules once Prometheus has evaluated each of them at least once."""

    def evaluated() -> list[dict[str, Any]]:
        rules = [rule for group in prometheus.get("/api/v1/rules")["groups"] for rule in group["rules"]]
        return rules if rules and all(rule["health"] != "unknown" for rule in rules) else []

    return wait_for(evaluated, "Prometheus has evaluated every rule", seconds, interval=0.5)
