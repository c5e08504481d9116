#!/usr/bin/env python
"""The original single-script form: train on one month, validate on the next, log to MLflow.

    python examples/duration-prediction.py --year 2021 --month 1

Reads like the seed's script (data, features, model, tracking, in order) but every stage is
a call into the taxipipe steps, and it prints what every runner prints. Writes the MLflow run
id to run_id.txt in the current directory.
"""

import argparse
import sys
from pathlib import Path

from taxipipe.flags import add_settings_flags, settings_from
from taxipipe.config import Settings
from taxipipe.pipeline import chain
from taxipipe.runners.session import example
from taxipipe.runners.simple import SimplePipeline


def run(settings: Settings) -> str:
    """Train and register the model (every node up to deploy); return the MLflow run id."""
    return SimplePipeline(settings, runner="script", steps=chain("deploy")).run()["train"]["run_id"]


def write_run_id(args: argparse.Namespace, started: float) -> None:
    run_id = run(settings_from(args))
    Path("run_id.txt").write_text(run_id)
    print(f"MLflow run_id: {run_id}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_settings_flags(parser)
    return example(write_run_id, parser)


if __name__ == "__main__":
    sys.exit(main())
