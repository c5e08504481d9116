"""The champion is chosen fairly and atomically, whoever runs the pipeline and whatever fails.

Each test runs the real pipeline on a real MLflow store; the rule itself is table-tested in
test_gate.py.
"""

from __future__ import annotations

import http.client
import http.server
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from taxipipe import champion, compute, tracking
from taxipipe.pipeline import graph, run_step
from taxipipe.runners.simple import SimplePipeline
from taxipipe.steps import StepContext
from tests.faults import FAST, ROOT, child_env, models, one_sentence_failure, read_only, run_with, small_disk
from tests.helpers import TlcServer, cli_data_flags, final_run_id, free_port, run_cli, start_cli, wait_healthy

MODEL = "nyc-taxi-duration"
QUICK = {"features": "categorical", "params": {"n_estimators": 10}}
LOOSE = {"TAXIPIPE_VALIDATION__MAX_RMSE": "20", "TAXIPIPE_DATA__DOWNLOAD_BACKOFF_SECONDS": "0.01"}


def rounds(n: int) -> dict[str, str]:
    return {**LOOSE, "TAXIPIPE_MODEL__PARAMS__N_ESTIMATORS": str(n)}


@pytest.mark.slow
def test_a_verdict_the_champion_moved_past_is_judged_again(home: Path, tlc_server: TlcServer) -> None:
    """make validate on 2021-01 (no champion), run on 2021-02 (champion v1), make on 2021-01."""
    validated = run_cli("make", "validate", *cli_data_flags(home, tlc_server), env=rounds(10))
    assert validated.returncode == 0, validated.stderr[-3000:]
    assert "promotable: no champion yet" in validated.stdout
    champion = run_cli("run", *cli_data_flags(home, tlc_server, month=2), env=rounds(10))
    assert "version 1 is now 'champion'" in champion.stdout, champion.stdout[-3000:]

    deployed = run_cli("make", *cli_data_flags(home, tlc_server), env=rounds(10))
    assert deployed.returncode == 0, deployed.stderr[-3000:]
    assert "Task 'validate_model': Up to date" in deployed.stdout
    assert ("version 2 registered; champion unchanged: the champion moved from none to v1 since validate_model; "
            "judged again: champion v1 trained on green/2021-02") in deployed.stdout
    assert "is now 'champion'" not in deployed.stdout
    client = models(home)
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == "1"
    assert client.get_model_version(MODEL, "2").tags["verdict"] == "not promoted"


@pytest.mark.slow
def test_two_runs_racing_to_promote_leave_the_better_champion(ui_server, tmp_path: Path,  # noqa: F811
                                                              tlc_server: TlcServer) -> None:
    """Two homes, one tracking server: both judge against no champion, then deploy at once."""
    url = ui_server[0]
    homes = {"good": (tmp_path / "good", rounds(40)), "bad": (tmp_path / "bad", rounds(3))}
    run_ids = {}
    for name, (home, env) in homes.items():
        validated = run_cli("make", "validate", *cli_data_flags(home, tlc_server), "--tracking-uri", url, env=env)
        assert "promotable: no champion yet" in validated.stdout, validated.stdout[-3000:] + validated.stderr[-3000:]
        run_ids[name] = final_run_id(validated.stdout)

    racing = {name: start_cli("make", *cli_data_flags(home, tlc_server), "--tracking-uri", url, env={**FAST, **env})
              for name, (home, env) in homes.items()}
    outputs = {name: process.communicate(timeout=900) for name, process in racing.items()}
    for name, process in racing.items():
        assert process.returncode == 0, outputs[name]

    client = models(url)
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert champion.run_id == run_ids["good"]
    good, bad = outputs["good"][0], outputs["bad"][0]
    assert "is now 'champion'" in good
    if "is now 'champion'" in bad:
        assert "since validate_model; judged again: RMSE" in good and " beats champion v" in good
    else:
        assert "champion unchanged: the champion moved from none to v" in bad and "is worse than champion" in bad
    assert len(client.search_model_versions(f"name = '{MODEL}'")) == 2
    assert not client.search_registered_models(f"name = '{MODEL}.promotion-lock'")


@pytest.mark.slow
def test_a_champion_that_trained_on_the_validation_month_is_not_compared(make_settings) -> None:
    window = SimplePipeline(make_settings(model=QUICK, data={"month": 3, "train_months": 3})).run()
    assert window["deploy"]["champion"] is True

    settings = make_settings(model=QUICK)
    challenger = SimplePipeline(settings).run()
    verdict = challenger["validate_model"]
    assert (verdict["promotable"], verdict["rule"], verdict["champion_rmse"]) == (False, "unfair", None)
    assert verdict["reason"].startswith("champion v1 trained on green/2021-02, the month both would be scored on")
    client = tracking.client(settings)
    assert client.get_run(verdict["run_id"]).data.tags["validation.rule"] == "unfair"
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == "1"


@pytest.mark.slow
def test_the_champion_scored_is_the_version_looked_up(make_settings, monkeypatch: pytest.MonkeyPatch) -> None:
    first = SimplePipeline(make_settings(model=QUICK)).run()
    better = {"features": "categorical", "params": {"n_estimators": 30}}
    second = SimplePipeline(make_settings(model=better, validation={"min_improvement": 100.0})).run()
    assert second["deploy"]["champion"] is False and second["train"]["rmse"] < first["train"]["rmse"] - 0.1

    settings = make_settings(model=QUICK)
    client = tracking.client(settings)
    look_up = tracking.champion_version

    def alias_moves_right_after(mlflow_client, name):
        found = look_up(mlflow_client, name)
        client.set_registered_model_alias(name, "champion", "2")
        return found

    monkeypatch.setattr(tracking, "champion_version", alias_moves_right_after)
    verdict = SimplePipeline(settings).run()["validate_model"]
    assert verdict["champion_version"] == "1"
    assert verdict["champion_rmse"] == pytest.approx(first["train"]["rmse"], abs=1e-9)


def fill(path: Path) -> None:
    """Write `path` until its disk has no room left."""
    import errno
    import os

    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(descriptor, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(descriptor)


@pytest.mark.slow
def test_a_deploy_that_fails_promoted_nothing_and_its_retry_registers_once(tmp_path: Path,
                                                                           tlc_server: TlcServer) -> None:
    """deployments/ on a full disk (read-only when not root): deploy fails, leaves no version and
    no alias; the retry registers the run once and promotes it."""
    home = tmp_path / "home"
    flags = ["make", *cli_data_flags(home, tlc_server)]
    if ROOT:
        with small_disk(home / "deployments", 64) as popen:
            fill(home / "deployments" / "filler")
            failed = run_with(flags, **popen)
        line = one_sentence_failure(failed, "Task 'deploy' failed", "no room to write")
    else:
        with read_only(home / "deployments"):
            failed = run_with(flags)
        line = one_sentence_failure(failed, "Task 'deploy' failed")
    assert "is now 'champion'" not in failed.stdout + failed.stderr, line
    client = models(home)
    assert not client.search_model_versions(f"name = '{MODEL}'"), "the failed deploy left a version"

    retried = run_with(flags)
    assert retried.returncode == 0, retried.stderr[-3000:]
    [version] = client.search_model_versions(f"name = '{MODEL}'")
    assert f"version {version.version} is now 'champion' (no champion yet)" in retried.stdout
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == str(version.version)
    assert (home / "deployments" / "green_2021-01.json").exists()


@pytest.mark.slow
def test_a_deploy_killed_after_registering_is_finished_by_its_retry_without_a_second_version(
        home: Path, tlc_server: TlcServer) -> None:
    saved = run_cli("make", "save", *cli_data_flags(home, tlc_server), env=rounds(10))
    assert saved.returncode == 0, saved.stderr[-3000:]
    run_id = final_run_id(saved.stdout)
    client = models(home)
    client.create_registered_model(MODEL)
    left = client.create_model_version(MODEL, f"runs:/{run_id}/model", run_id=run_id).version

    retried = run_cli("make", *cli_data_flags(home, tlc_server), env=rounds(10))
    assert retried.returncode == 0, retried.stderr[-3000:]
    assert f"version {left} is now 'champion' (no champion yet)" in retried.stdout
    assert [str(version.version) for version in client.search_model_versions(f"name = '{MODEL}'")] == [str(left)]


@pytest.mark.slow
def test_the_compute_mode_is_chosen_once_and_read_from_the_records(make_settings,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    settings = make_settings(model=QUICK)
    context = StepContext(settings)
    nodes = {node.name: node for node in graph(settings)}
    records = {}
    for name in ("extract[2021-01]", "extract[2021-02]", "validate_data", "transform", "features"):
        node = nodes[name]
        records[name] = run_step(node, context, {up: records[up] for up in node.upstream}, hooks=())
    assert records["features"]["compute"] == "memory"

    monkeypatch.setattr(compute, "available_bytes", lambda: 0)
    downloads = [context.layout.download(month) for month in settings.months]
    assert compute.choose(settings, downloads) == "external", "choosing again would now disagree"
    trained = run_step(nodes["train"], context, {"features": records["features"]}, hooks=())
    assert trained["compute"] == "memory"
    assert tracking.client(settings).get_run(trained["run_id"]).data.tags["compute"] == "memory"


# the champion gate fails closed --------------------------------------------------------

class RegistryProxy:
    """A real HTTP proxy in front of a tracking server that can answer 503 to the alias lookup."""

    ALIAS_PATH = "/api/2.0/mlflow/registered-models/alias"

    def __init__(self, upstream_port: int) -> None:
        self.fail_alias = False
        self.refused: list[str] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _forward(self) -> None:
                if proxy.fail_alias and self.command == "GET" and self.path.startswith(proxy.ALIAS_PATH):
                    proxy.refused.append(self.path)
                    self.send_error(503, "registry unavailable")
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                connection = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=120)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in {"host", "connection"}}
                connection.request(self.command, self.path, body=body or None, headers=headers)
                answer = connection.getresponse()
                payload = answer.read()
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in {"transfer-encoding", "connection", "content-length"}:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                connection.close()

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _forward

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.slow
def test_registry_errors_fail_the_gate_closed(tmp_path: Path, home: Path, tlc_server: TlcServer) -> None:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "taxipipe", "ui", "--home", str(tmp_path / "server"),
                               "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=child_env())
    proxy = RegistryProxy(port)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", server)
        flags = [*cli_data_flags(home, tlc_server), "--tracking-uri", proxy.url]
        retries = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", **FAST}
        first = run_cli("run", *flags, env=retries)
        assert first.returncode == 0, first.stderr[-3000:]
        champion = models(proxy.url).get_model_version_by_alias(MODEL, "champion")

        proxy.fail_alias = True
        worse = run_cli("run", *flags, env={**FAST, "TAXIPIPE_MODEL__PARAMS__MAX_DEPTH": "1"})
        line = one_sentence_failure(worse, "champion", MODEL, "nothing was promoted")
        assert "validate_model" in worse.stdout, worse.stdout[-2000:]
        assert len(proxy.refused) == 5, f"the alias lookup was tried {len(proxy.refused)} times, not 1 + 4 retries"
        proxy.fail_alias = False
        registry = models(proxy.url)
        assert registry.get_model_version_by_alias(MODEL, "champion").version == champion.version, line
        assert [v.version for v in registry.search_model_versions(f"name = '{MODEL}'")] == [champion.version]
    finally:
        proxy.close()
        server.terminate()
        try:
            server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.communicate()


def test_missing_alias_or_model_means_no_champion_and_other_errors_raise(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow import MlflowClient

    from taxipipe import tracking
    from taxipipe.config import load_settings
    from taxipipe.errors import TrackingError

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    settings = load_settings(overrides={"home": str(tmp_path)})
    client = tracking.client(settings)
    assert tracking.champion_version(client, "no-such-model") is None
    client.create_registered_model("no-alias-yet")
    assert tracking.champion_version(client, "no-alias-yet") is None
    unreachable = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(TrackingError, match="nothing was promoted"):
        tracking.champion_version(MlflowClient(unreachable, registry_uri=unreachable), "m")


# the deployment record says only what the registry shows ----------------------------------

KILLED_BEFORE_THE_ALIAS = """
import sys
import threading
from pathlib import Path

from mlflow import MlflowClient

from taxipipe import steps
from taxipipe.config import load_settings

home, run_id = Path(sys.argv[1]), sys.argv[2]


def wait_to_be_killed(self, *args, **kwargs):
    print("tagged", flush=True)
    threading.Event().wait()


MlflowClient.set_registered_model_alias = wait_to_be_killed
verdict = {"run_id": run_id, "rmse": 6.0, "promotable": True, "rule": "first", "reason": "no champion yet",
           "champion_version": None, "champion_rmse": None}
saved = {"run_id": run_id, "model_uri": f"runs:/{run_id}/model", "model_id": None}
steps.deploy(steps.StepContext(load_settings(overrides={"home": str(home)})),
             {"validate_model": verdict, "save": saved})
"""


def test_a_deploy_killed_before_the_alias_moves_leaves_a_record_that_claims_nothing(home: Path) -> None:
    """SIGKILL after the version is tagged, before the alias moves, never retried: the record
    says pending, not champion, and the next promotion settles it as the registry shows it."""
    import json
    import os
    import signal

    from taxipipe.config import load_settings
    from taxipipe.steps import deploy

    settings = load_settings(overrides={"home": str(home)})
    client = tracking.client(settings)
    experiment = tracking.experiment_id(settings, client, "simple")
    run_ids = [client.create_run(experiment).info.run_id for _ in range(2)]
    child = subprocess.Popen([sys.executable, "-c", KILLED_BEFORE_THE_ALIAS, str(home), run_ids[0]],
                             stdout=subprocess.PIPE, text=True, env=child_env())
    try:
        assert child.stdout is not None and child.stdout.readline() == "tagged\n", "deploy did not reach the alias"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL

    killed = StepContext(settings).layout.deployment_record
    left = json.loads(killed.read_text())
    assert left["champion"] is False, f"the record claims a champion the registry does not show: {left}"
    assert (left.get("promotion"), left["version"]) == (champion.PENDING, 1), left
    assert tracking.champion_version(client, MODEL) is None
    assert client.get_model_version(MODEL, "1").tags[champion.PROMOTION_TAG] == champion.PENDING

    later = load_settings(overrides={"home": str(home), "data": {"month": 2}})
    verdict = {"run_id": run_ids[1], "rmse": 6.0, "promotable": True, "rule": "first", "reason": "no champion yet",
               "champion_version": None, "champion_rmse": None}
    saved = {"run_id": run_ids[1], "model_uri": f"runs:/{run_ids[1]}/model", "model_id": None}
    deployed = deploy(StepContext(later), {"validate_model": verdict, "save": saved})
    assert deployed["champion"] is True and str(tracking.champion_version(client, MODEL).version) == "2"
    promoted = json.loads(StepContext(later).layout.deployment_record.read_text())
    assert (promoted["champion"], promoted["promotion"], promoted["version"]) == (True, tracking.CHAMPION, 2)
    settled = json.loads(killed.read_text())
    assert (settled["champion"], settled["promotion"]) == (False, champion.INTERRUPTED), settled
    assert client.get_model_version(MODEL, "1").tags[champion.PROMOTION_TAG] == champion.INTERRUPTED
    assert client.get_model_version(MODEL, "2").tags[champion.PROMOTION_TAG] == tracking.CHAMPION
    assert not list(killed.parent.glob(f".*.{os.getpid()}-*.part")), "a settled record was left half-way"


def test_a_champion_missing_its_model_file_names_the_file_and_the_fix(champion_in_home: Path) -> None:
    """The gate fails closed, and says which file of which version is missing and what to do."""
    from taxipipe.config import load_settings
    from taxipipe.errors import TrackingError

    settings = load_settings(overrides={"home": str(champion_in_home), "data": {"year": 2021, "month": 1}})
    [pickled] = (champion_in_home / "mlflow" / "artifacts").rglob("python_model.pkl")
    pickled.unlink()
    tracking.client(settings)
    with pytest.raises(TrackingError) as failed:
        champion.score(settings.mlflow.model_name, "1", StepContext(settings).layout.validation_clean)
    sentence = str(failed.value)
    assert str(pickled) in sentence and "champion v1" in sentence, sentence
    assert "run again when the registry answers" not in sentence, sentence
    assert "nothing was promoted" in sentence and "restore" in sentence, sentence


def test_the_registry_says_what_the_model_is_and_which_version_each_champion_gave_way_to(tmp_path: Path) -> None:
    """A learner reading the registry: the model's description names the alias and the rule, and
    a former champion's `promotion` tag says which version replaced it (it said `champion`)."""
    from taxipipe.config import load_settings

    client = tracking.client(load_settings(overrides={"home": str(tmp_path)}))
    experiment = client.create_experiment("registry-story")
    client.create_registered_model("described-later")
    versions = []
    for name in (MODEL, MODEL, "described-later"):
        source = client.create_run(experiment).info.run_id
        versions.append(tracking.register(client, name, f"runs:/{source}/model", source, None, tags={},
                                          description=champion.model_description(name)))
    first, second, _ = versions
    champion.promote(client, MODEL, first)
    champion.promote(client, MODEL, second)
    champion.promote(client, MODEL, second)

    assert client.get_model_version(MODEL, first).tags[champion.PROMOTION_TAG] == f"replaced by v{second}"
    assert client.get_model_version(MODEL, second).tags[champion.PROMOTION_TAG] == "champion"
    description = client.get_registered_model(MODEL).description
    assert f"`models:/{MODEL}@champion`" in description and "docs/champion.md" in description
    assert client.get_registered_model("described-later").description == champion.model_description("described-later")
