"""How a model becomes champion, top to bottom: look the champion up, check that the comparison
is fair, score the champion on this run's validation rides, judge (the rule: `taxipipe.gate`),
register the version, settle the deployment record, promote.

It takes plain values (an MLflow client, the settings, the validation rides' file, a run id, an
RMSE); the steps `validate_model` and `deploy` call `judge` and `deploy`. docs/champion.md
tells the guarantees.
"""

from __future__ import annotations

import json
import time
from contextlib import suppress
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, TypedDict

from taxipipe import gate, tracking
from taxipipe.champion.lock import promotion_lock
from taxipipe.errors import PipelineStateError, TrackingError
from taxipipe.safety.atomic import atomic_path, write_text_atomic

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from taxipipe.config import Settings

#: Model-version tag saying what deploy made of it: pending (being promoted), champion, rejected,
#: interrupted (registered, but the process died before it could become champion), or replaced.
PROMOTION_TAG, PENDING, INTERRUPTED = "promotion", "pending", "interrupted before it became champion"
#: The start of the promotion tag of a former champion: `replaced by v7`.
REPLACED = "replaced by"
#: Model-version tag: the months (partition keys, comma-separated) the version trained on.
TRAINED_ON_TAG = "trained_on"


class Judgement(TypedDict):
    """The gate's verdict on a run's model, and the champion it was judged against."""

    run_id: str
    rmse: float
    promotable: bool
    rule: str
    reason: str
    champion_rmse: float | None
    champion_version: str | None


class Deployment(TypedDict):
    """The deployment record as deploy wrote it: the registered version, whether it is champion
    now, and why."""

    model_name: str
    version: int
    champion: bool
    promotion: str
    reason: str
    run_id: str
    rmse: float
    partition: str
    runner: str
    deployed_at: str


def lookup(client: MlflowClient, name: str) -> gate.Champion | None:
    """The champion the registry names now, as the gate sees it (not scored yet); None: none yet."""
    found = tracking.champion_version(client, name)
    return None if found is None else gate.Champion(str(found.version), trained_on(client, found))


def trained_on(client: MlflowClient, version: Any) -> tuple[str, ...]:
    """The months (partition keys) a registered version trained on.

    Versions registered before the tag existed are read from their run's parameters.
    """
    if version.tags.get(TRAINED_ON_TAG):
        return tuple(version.tags[TRAINED_ON_TAG].split(","))
    from taxipipe.partition import Partition
    from taxipipe.window import training_window

    params = client.get_run(version.run_id).data.params
    last = (Partition.parse(params["color"], params["window_last"]) if "window_last" in params
            else Partition(params["color"], int(params["year"]), int(params["month"])))
    return tuple(month.key for month in training_window(last, int(params.get("train_months", 1))))


def score(name: str, version: str, rides: Path) -> float:
    """The RMSE of registered `version` of `name` on the validation rides in `rides`.

    The version predicts on the model itself, as `taxipipe serve` runs it, not through MLflow's
    input check, which tests each of the month's values one by one (about a second of CPU).
    """
    import mlflow.pyfunc
    import pandas as pd
    from mlflow.exceptions import MlflowException

    from taxipipe.features import MODEL_COLUMNS, TARGET
    from taxipipe.models.base import rmse

    uri = f"models:/{name}/{version}"
    try:
        champion = mlflow.pyfunc.load_model(uri, suppress_warnings=True).unwrap_python_model()
    except (MlflowException, OSError) as exc:
        raise _unloadable(uri, version, exc) from None
    if not rides.exists():
        raise PipelineStateError(f"the validation month's rides ({rides}) are gone, so the "
                                 "champion cannot be scored; run the pipeline again from transform")
    frame = pd.read_parquet(rides)
    return rmse(frame[TARGET], champion.predict(None, frame[MODEL_COLUMNS]))


def _unloadable(uri: str, version: str, exc: Exception) -> TrackingError:
    """One sentence for a champion that cannot be loaded: a file missing from its artifacts
    (named, with what to do), or a registry that did not answer."""
    import re

    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    named = re.search(r'"MLmodel" configuration file at "([^"]+)"', text)
    missing = exc.filename if isinstance(exc, FileNotFoundError) else named.group(1) if named else None
    if missing is None:
        return TrackingError(f"cannot load the champion {uri} to compare with it ({text[:200]}); "
                             "nothing was promoted, run again when the registry answers")
    return TrackingError(f"the champion v{version} ({uri}) cannot be loaded to compare with it: its file {missing} "
                         "is missing; nothing was promoted; restore that file from a backup of the artifact store, or "
                         f"point the '{tracking.CHAMPION}' alias at a version whose files are whole (the model's page "
                         "in `taxipipe ui`), then run again")


def judge(client: MlflowClient, settings: Settings, rides: Path, run_id: str, rmse: float) -> Judgement:
    """Judge run `run_id`'s model (`rmse` on the validation month) against the champion the
    registry names now; log the verdict on the run.

    The champion is looked up once, and that version (not whatever the alias names a moment
    later) is scored on the validation rides in `rides`, unless the comparison is unfair anyway.
    """
    trained = [month.key for month in settings.training_months]
    validation_month = settings.validation_month.key
    champion = lookup(client, settings.mlflow.model_name)
    if champion is not None and gate.fair(champion, trained, validation_month):
        champion = replace(champion, rmse=score(settings.mlflow.model_name, champion.version, rides))
    verdict = gate.judge(rmse, trained, validation_month, settings.validation, champion)
    tracking.log_values(client, run_id, metrics={"champion_rmse": champion.rmse if champion else None},
                        tags={"validation.promotable": verdict.promotable, "validation.rule": verdict.rule,
                              "validation.reason": verdict.reason})
    tracking.describe_run(client, run_id, f"Gate: {'' if verdict.promotable else 'not '}promotable, {verdict.reason}.")
    return {"run_id": run_id, "rmse": rmse, "promotable": verdict.promotable, "rule": verdict.rule,
            "reason": verdict.reason, "champion_rmse": champion.rmse if champion else None,
            "champion_version": champion.version if champion else None}


def deploy(client: MlflowClient, settings: Settings, verdict: Judgement, *, run_id: str, model_uri: str,
           model_id: str | None, rides: Path, record: Path, runner: str) -> Deployment:
    """Register run `run_id`'s model (`model_uri`) with the verdict; move `champion` only if it allows.

    Under the registry's promotion lock (`promotion_lock`) the champion is looked up again: if
    it moved since `verdict`, the model is judged again against the new one (on `rides`). A
    retry reuses the version an earlier attempt registered from the same run. The deployment
    record (`record`) is written before the alias moves (the last registry write), as pending,
    and settled once the alias has moved; if anything fails before that, the record is put back
    and a version this attempt registered (and the alias does not name) is deleted, so a deploy
    that fails has done nothing the user can see, and one that promoted has said so.
    """
    name = settings.mlflow.model_name
    with promotion_lock(client, name, f"deploy of {settings.partition} ({runner})"):
        earlier = tracking.version_of_run(client, name, run_id)
        verdict = _verdict_now(client, settings, rides, verdict, tracking.champion_version(client, name), earlier)
        version = earlier.version if earlier is not None else tracking.register(
            client, name, model_uri, run_id, model_id, tags={
                "run_id": run_id, "rmse": f"{verdict['rmse']:.6f}", "partition": settings.partition.key,
                TRAINED_ON_TAG: ",".join(month.key for month in settings.training_months),
                "runner": runner, "model_kind": settings.model.kind}, description=model_description(name))
        try:
            return _settle(client, settings, record, runner, version, verdict, run_id)
        except BaseException:
            if earlier is None:
                with suppress(Exception):
                    champion = tracking.champion_version(client, name)
                    if champion is None or str(champion.version) != str(version):
                        client.delete_model_version(name, version)
            raise


def _verdict_now(client: MlflowClient, settings: Settings, rides: Path, verdict: Judgement, current: Any | None,
                 earlier: Any | None) -> Judgement:
    """The verdict that holds against the champion the registry names now (`current`).

    `earlier` is the version an earlier attempt of this run registered, if any.
    """
    if earlier is not None and current is not None and str(current.version) == str(earlier.version):
        return {**verdict, "promotable": True, "rule": "retried", "reason": "promoted by an earlier attempt of this run"}
    now = str(current.version) if current is not None else None
    if now == (str(verdict["champion_version"]) if verdict["champion_version"] is not None else None):
        return verdict
    judged = judge(client, settings, rides, verdict["run_id"], verdict["rmse"])
    before, after = (f"v{version}" if version else "none" for version in (verdict["champion_version"], now))
    return {**judged, "reason": f"the champion moved from {before} to {after} since validate_model; "
                                f"judged again: {judged['reason']}"}


def _settle(client: MlflowClient, settings: Settings, path: Path, runner: str, version: str,
            verdict: Judgement, run_id: str) -> Deployment:
    """Write the deployment record at `path`, tag the version with the verdict, then move the
    alias if it allows; if any of it fails, the record is put back as it was.

    A promotion is first recorded as pending (`"champion": false`); the settled record is
    written beside it before the alias moves and renamed into place once it has moved, so a
    kill in between leaves a record that claims nothing the registry does not show.
    """
    name, promotable = settings.mlflow.model_name, verdict["promotable"]
    record: Deployment = {
        "model_name": name, "version": int(version), "champion": False,
        "promotion": PENDING if promotable else "rejected",
        "reason": verdict["reason"], "run_id": run_id, "rmse": verdict["rmse"],
        "partition": settings.partition.key, "runner": runner, "deployed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    previous = _replace_record(path, record)
    moved = False
    try:
        for key, value in {"verdict": "promoted" if promotable else "not promoted", "reason": verdict["reason"],
                           PROMOTION_TAG: record["promotion"]}.items():
            client.set_model_version_tag(name, version, key, value)
        if promotable:
            record = {**record, "champion": True, "promotion": tracking.CHAMPION}
            with atomic_path(path) as settled:
                settled.write_text(_record_text(record))
                promote(client, name, version)
                moved = True
    except BaseException:
        if not moved:
            _restore_record(path, previous)
        raise
    if promotable:
        _settle_interrupted(path.parent, client, name, path)
    return record


def _settle_interrupted(folder: Path, client: MlflowClient, name: str, promoted: Path) -> None:
    """Give the home's other records still pending (deploys killed before their alias moved)
    the promotion the registry now shows for their version (`promote` retagged it).

    Best effort: a record it cannot settle stays pending, which claims nothing.
    """
    for path in folder.glob("*.json"):
        with suppress(Exception):
            record = json.loads(path.read_text())
            if path == promoted or record.get("promotion") != PENDING or record.get("model_name") != name:
                continue
            tags = client.get_model_version(name, str(record["version"])).tags
            write_text_atomic(path, _record_text({**record, "champion": False, "promotion": tags.get(PROMOTION_TAG)}))


def _replace_record(path: Path, record: Deployment) -> str | None:
    """Write the deployment record atomically; return what it held before (None: nothing)."""
    previous = path.read_text() if path.exists() else None
    write_text_atomic(path, _record_text(record))
    return previous


def _record_text(record: Mapping[str, Any]) -> str:
    return json.dumps(record, indent=2) + "\n"


def _restore_record(path: Path, previous: str | None) -> None:
    if previous is None:
        path.unlink(missing_ok=True)
    else:
        write_text_atomic(path, previous)


def promote(client: MlflowClient, name: str, version: str) -> None:
    """Point `champion` at `version`, the last registry write a promotion needs, then tag it
    champion and the champion it replaced `replaced by vN`.

    First the versions an interrupted deploy left pending are settled: the one the alias names
    (its deploy was killed after the alias moved) is tagged champion, the others interrupted.
    The version keeps its pending tag until the alias has moved, so a kill before the move
    leaves no version tagged champion that never was; a tag this process could not write after
    the move is settled the same way by the next promotion.
    """
    from mlflow.exceptions import MlflowException

    current = tracking.champion_version(client, name)
    for stale in client.search_model_versions(f"name = '{name}' and tags.{PROMOTION_TAG} = '{PENDING}'"):
        if str(stale.version) != str(version):
            became = current is not None and str(current.version) == str(stale.version)
            client.set_model_version_tag(name, stale.version, PROMOTION_TAG,
                                         tracking.CHAMPION if became else INTERRUPTED)
    client.set_registered_model_alias(name, tracking.CHAMPION, version)
    with suppress(MlflowException):
        client.set_model_version_tag(name, version, PROMOTION_TAG, tracking.CHAMPION)
        if current is not None and str(current.version) != str(version):
            client.set_model_version_tag(name, current.version, PROMOTION_TAG, f"{REPLACED} v{version}")


def model_description(name: str) -> str:
    """What the registered model is and how its champion is chosen (the registry's description)."""
    champion = tracking.CHAMPION
    return (f"NYC taxi trip duration in minutes (rides of 1 to 60 minutes), predicted from the pickup and "
            f"drop-off zones and the trip distance. Every run registers a version; use "
            f"`models:/{name}@{champion}`. A version takes the '{champion}' alias only when its RMSE on "
            f"the month after its training months is within the configured bounds and lower than the "
            f"champion's on that month (docs/champion.md). Each version's `{PROMOTION_TAG}` tag says what it "
            f"became: {champion}, rejected, or {REPLACED} a later version.")
