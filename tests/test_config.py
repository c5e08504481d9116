"""Settings: precedence, file formats, presets, errors naming the key, and `config show`."""

from __future__ import annotations

from pathlib import Path

import pytest

from taxipipe.config import describe_settings, load_settings
from taxipipe.errors import ConfigError
from taxipipe.models.xgboost import PRESETS
from tests.helpers import run_cli, store_uri


def test_defaults_match_the_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TAXIPIPE_HOME", raising=False)
    settings = load_settings()
    assert (settings.data.color, settings.data.year, settings.data.month) == ("green", 2023, 1)
    assert settings.model.params.max_depth == 6 and settings.model.params.n_estimators == 100
    assert settings.model.features == "categorical"
    assert settings.experiment_name("airflow") == "airflow-taxi-duration"
    assert settings.home == Path("~/.taxipipe").expanduser()
    assert settings.tracking_uri() == store_uri(settings.home)


def test_precedence_file_env_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "taxipipe.toml"
    config.write_text("[data]\nyear = 2021\nmonth = 3\n[model.params]\nmax_depth = 7\nlearning_rate = 0.2\n")
    monkeypatch.setenv("TAXIPIPE_MODEL__PARAMS__MAX_DEPTH", "8")
    monkeypatch.setenv("TAXIPIPE_HOME", str(tmp_path / "env-home"))
    settings = load_settings(config, {"data": {"month": 4}})
    assert settings.data.year == 2021  # file
    assert settings.data.month == 4  # flag beats file
    assert settings.model.params.max_depth == 8  # env beats file
    assert settings.model.params.learning_rate == 0.2  # file
    assert settings.home == tmp_path / "env-home"


def test_yaml_file_and_config_env_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "taxipipe.yaml"
    config.write_text("model:\n  features: onehot\nvalidation:\n  max_rmse: 9.5\n")
    monkeypatch.setenv("TAXIPIPE_CONFIG", str(config))
    settings = load_settings()
    assert settings.model.features == "onehot" and settings.validation.max_rmse == 9.5


def test_preset_fills_params_not_given(tmp_path: Path) -> None:
    settings = load_settings(overrides={"model": {"preset": "zoomcamp", "params": {"max_depth": 12}}})
    assert settings.model.params.max_depth == 12
    assert settings.model.params.learning_rate == PRESETS["zoomcamp"]["learning_rate"]
    assert settings.model.params.n_estimators == 30


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[model.params]\nmax_dept = 7\n", "model.params.max_dept"),
        ("[data]\nmonth = 'june'\n", "data.month"),
        ("[data]\nmonth = 13\n", "data.month"),
        ("[nonsense]\nkey = 1\n", "nonsense"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, text: str, named: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_settings(config)


def test_unparseable_and_missing_files(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[data\nyear = ")
    with pytest.raises(ConfigError, match="cannot be parsed"):
        load_settings(broken)
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "absent.toml")


def test_describe_settings_names_origins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[data]\nyear = 2021\n")
    monkeypatch.setenv("TAXIPIPE_DATA__MONTH", "5")
    origins = {key: origin for key, _, origin in describe_settings(config, {"model": {"features": "onehot"}})}
    assert origins["data.year"] == "file"
    assert origins["data.month"] == "env"
    assert origins["model.features"] == "flag"
    assert origins["data.color"] == "default"


def test_cli_config_show_and_unknown_key(tmp_path: Path) -> None:
    shown = run_cli("config", "show", "--year", "2022", "--home", str(tmp_path))
    assert shown.returncode == 0, shown.stderr
    assert "data.year flag 2022" in [" ".join(line.split()) for line in shown.stdout.splitlines()]
    bad = tmp_path / "bad.toml"
    bad.write_text("[model]\ncolour = 'green'\n")
    failed = run_cli("run", "--config", str(bad), "--home", str(tmp_path))
    assert failed.returncode == 1
    assert "unknown key 'model.colour'" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert not (tmp_path / "downloads").exists()


@pytest.mark.parametrize(("variable", "meant"), [
    ("TAXIPIPE_VALIDATON__MAX_RMSE", "TAXIPIPE_VALIDATION__MAX_RMSE"),
    ("TAXIPIPE_DATA_YEAR", "TAXIPIPE_DATA__YEAR"),
    ("TAXIPIPE_FOO__BAR", None),
    ("TAXIPIPE_HOME__DIR", None),
])
def test_an_unknown_taxipipe_variable_is_refused(monkeypatch: pytest.MonkeyPatch, variable: str,
                                                 meant: str | None) -> None:
    monkeypatch.setenv(variable, "1")
    with pytest.raises(ConfigError) as refused:
        load_settings()
    message = str(refused.value)
    assert message.startswith(f"unknown environment variable {variable}") and "TAXIPIPE_TEST_DATA" in message
    assert (f"did you mean {meant}?" in message) if meant else "did you mean" not in message


def test_the_taxipipe_variables_that_are_not_settings_are_allowed(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from taxipipe.config import NOT_SETTINGS

    config = tmp_path / "c.toml"
    config.write_text("[data]\nyear = 2021\n")
    for variable in NOT_SETTINGS:
        monkeypatch.setenv(variable, str(config))
    monkeypatch.setenv("TAXIPIPE_DATA__MONTH", "5")
    settings = load_settings()
    assert (settings.data.year, settings.data.month) == (2021, 5)


def test_an_empty_home_and_an_inverted_rmse_range_are_refused(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAXIPIPE_HOME", "")
    with pytest.raises(ConfigError, match="home is empty .* current directory"):
        load_settings()
    monkeypatch.setenv("TAXIPIPE_HOME", str(tmp_path))
    with pytest.raises(ConfigError, match="home is empty"):
        load_settings(overrides={"home": ""})
    monkeypatch.setenv("TAXIPIPE_VALIDATION__MIN_RMSE", "9")
    with pytest.raises(ConfigError, match=r"validation\.min_rmse \(9\.0\) must be below validation\.max_rmse \(8\.0\)"):
        load_settings()
    assert load_settings(overrides={"validation": {"max_rmse": 10}}).validation.min_rmse == 9
    failed = run_cli("config", "show", "--home", "")
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert [line for line in failed.stderr.splitlines() if line.startswith("❌")] == [
        "❌ invalid configuration: home is empty (TAXIPIPE_HOME=, --home '' or home = ''), which would make "
        "the current directory the home: give a directory, or unset it for ~/.taxipipe"]


def test_help_and_version_are_fast() -> None:
    import time

    started = time.perf_counter()
    version = run_cli("--version")
    assert version.returncode == 0 and version.stdout.startswith("taxipipe ")
    assert time.perf_counter() - started < 5
    help_text = run_cli("--help")
    assert help_text.returncode == 0 and "run" in help_text.stdout


def test_concurrent_loads_keep_their_own_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.delenv("TAXIPIPE_CONFIG", raising=False)
    monkeypatch.delenv("TAXIPIPE_DATA__YEAR", raising=False)
    config = tmp_path / "c.toml"
    config.write_text("[data]\nyear = 2021\n")

    def year(index: int) -> tuple[int, int]:
        return index, load_settings(config if index % 2 else None).data.year

    with ThreadPoolExecutor(8) as pool:
        for index, loaded in pool.map(year, range(400)):
            assert loaded == (2021 if index % 2 else 2023)
