"""Its one job: what the fork server of tests/forked.py imports once, before it forks the commands.

Nothing here reads, when imported, an environment variable a test changes: matplotlib (its
config and cache directories follow HOME) and the engines are imported by the commands.
"""

import mlflow.pyfunc  # noqa: F401
import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
import pandas  # noqa: F401
import pandera.pandas  # noqa: F401
import pyarrow.parquet  # noqa: F401
import xgboost  # noqa: F401
from mlflow.utils import requirements_utils

import taxipipe.cli  # noqa: F401
import taxipipe.runners.simple  # noqa: F401

# The first model a process saves or loads makes MLflow map every installed distribution to
# its modules (it reads each one's file list: about 1.5 s of CPU); the commands inherit the map.
requirements_utils._init_packages_to_modules_map()
