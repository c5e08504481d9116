"""taxipipe.walltime: the wall time lands on the MLflow run this run's train made, never on an older one."""

from __future__ import annotations

from taxipipe import tracking, walltime


def test_wall_time_goes_to_this_runs_train_only(make_settings) -> None:
    settings = make_settings()
    client = tracking.client(settings)
    experiment = tracking.experiment_id(settings, client, "simple")

    earlier = client.create_run(experiment)  # a train that ran before this run started (up to date, cached)
    started = earlier.info.start_time / 1000 + 0.5
    assert walltime.record(settings, {"train": {"run_id": earlier.info.run_id}}, started) is None
    assert walltime.WALL_METRIC not in client.get_run(earlier.info.run_id).data.metrics

    fresh = client.create_run(experiment)
    started = fresh.info.start_time / 1000 - 2.0  # the runner started two seconds before train
    seconds = walltime.record(settings, {"train": {"run_id": fresh.info.run_id}}, started)
    assert seconds is not None and seconds >= 2.0
    assert client.get_run(fresh.info.run_id).data.metrics[walltime.WALL_METRIC] == seconds

    assert walltime.record(settings, {"validate_data": {"seconds": 1.0}}, started) is None


def test_steps_an_earlier_run_did_are_tagged_reused(make_settings) -> None:
    settings = make_settings()
    client = tracking.client(settings)
    train = client.create_run(tracking.experiment_id(settings, client, "make"))
    started = train.info.start_time / 1000 - 1.0
    records = {"extract[2021-01]": {"finished_at": started - 60}, "extract[2021-02]": {"finished_at": started + 0.1},
               "validate_data": {"finished_at": started - 59}, "transform": {},  # recorded before finished_at
               "features": {"finished_at": started + 0.5},
               "train": {"run_id": train.info.run_id, "finished_at": started + 0.9}}
    assert walltime.record(settings, records, started) is not None
    assert client.get_run(train.info.run_id).data.tags[walltime.REUSED_TAG] == "extract,validate_data,transform"
