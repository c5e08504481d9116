"""MLflow tracking: the client (connection), the SQLite store (store), run logging (runs), the
model registry's plain calls (registry), the command that starts `mlflow server` (server), and
the home's files a step hands the next through the server's artifact proxy (shared_files).
How the champion is chosen and promoted lives in `taxipipe.champion`.

The served model's pyfunc class lives in `taxipipe.pyfunc`, whose module path stored models name.
"""

from taxipipe.tracking.connection import check_reachable, client, finish_warm_up, warm_up
from taxipipe.tracking.registry import CHAMPION, champion_version, register, version_of_run
from taxipipe.tracking.runs import (
    EXPERIMENT_KIND,
    describe_run,
    experiment_id,
    fail_abandoned_runs,
    failed_on_error,
    git_commit,
    log_datasets,
    log_peak_memory,
    log_timings,
    log_values,
    named_experiment,
    owner_gone,
    owner_tags,
    pip_requirements,
)
from taxipipe.tracking.server import UI_START_PAGE, server_command, server_env
from taxipipe.tracking.store import ROOT_TAG, artifact_root, prepare_store, sqlite_file

__all__ = [
    "CHAMPION", "EXPERIMENT_KIND", "ROOT_TAG", "UI_START_PAGE", "artifact_root", "champion_version", "check_reachable",
    "client", "describe_run", "experiment_id", "fail_abandoned_runs", "failed_on_error", "finish_warm_up",
    "git_commit", "log_datasets", "log_peak_memory", "log_timings", "log_values", "named_experiment",
    "owner_gone", "owner_tags", "pip_requirements", "prepare_store", "register", "server_command", "server_env",
    "sqlite_file", "version_of_run", "warm_up",
]
