"""layout.py names the files under the home: the commands write where `Home` and `Layout` say."""

from __future__ import annotations

from pathlib import Path

from taxipipe.config import load_settings
from taxipipe.layout import Home, Layout
from taxipipe.partition import Partition

MONTH = Partition("green", 2021, 2)


def test_the_commands_write_where_the_layout_names_the_files(tmp_path: Path) -> None:
    from taxipipe.runners.make.state import lock_path
    from taxipipe.safety.atomic import remove_stale_parts
    from taxipipe.safety.home_lock import hold_home
    from taxipipe.serve.batch import predictions_path
    from taxipipe.serve.monitor import verdict_path

    settings = load_settings(overrides={"home": str(tmp_path)})
    home, window = Home(tmp_path), Layout(tmp_path, MONTH, 3)
    assert predictions_path(settings, MONTH) == home.predictions(MONTH) == tmp_path / "predictions/green/2021-02.parquet"
    assert verdict_path(settings) == home.monitor_verdict
    assert settings.tracking_uri() == f"sqlite:///{home.mlflow_store}"
    assert lock_path(tmp_path, MONTH, 3) == window.make_state == tmp_path / "state/green/2020-12..2021-02.lock.json"
    with hold_home(tmp_path, "a test", wait=False):
        assert home.run_lock.exists() and home.run_lock_owner.read_text()
    leftovers = [folder / ".x.parquet.999999999-0000.part" for folder in home.written_folders]
    for path in leftovers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
    assert sorted(remove_stale_parts(tmp_path)) == sorted(leftovers)


def test_a_window_names_its_files_in_its_own_folder(tmp_path: Path) -> None:
    window = Layout(tmp_path, MONTH, 2)
    assert window.workdir == tmp_path / "partitions/green/2021-01..2021-02"
    assert {path.parent for path in (window.train_clean, window.validation_clean, window.encoder, window.model,
                                     window.train_features, window.validation_features, window.xgboost_cache)} == {
        window.workdir}
    assert window.download(MONTH) == Home(tmp_path).download(MONTH) == window.train_raw
    assert window.deployment_record == tmp_path / "deployments/green_2021-01..2021-02.json"
