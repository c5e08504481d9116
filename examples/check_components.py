#!/usr/bin/env python
"""A quick check of each step on a small file: every step alone, with its own verdict.

    python examples/check_components.py [--rows 5000] [settings flags]

Takes the first rows of the configured training month and the one after it (downloaded or
cached as usual), and runs the nine steps on them in a throwaway home with its own MLflow
store, printing ✅ or ❌ per step. Nothing in the real home changes but the download cache.
"""

import argparse
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq

from taxipipe import console
from taxipipe.flags import add_settings_flags, settings_from
from taxipipe.errors import TaxipipeError
from taxipipe.pipeline import STEPS, graph, run_step
from taxipipe.steps import StepContext, extract_month


def sample_months(settings, rows: int, mirror: Path) -> None:
    """Write the first `rows` rides of every month into `mirror`, named as the TLC names them."""
    context = StepContext(settings, runner="check")
    for partition in settings.months:
        source = Path(extract_month(context, partition)["path"])
        table = pq.ParquetFile(source).read_row_group(0).slice(0, rows)
        pq.write_table(table, mirror / f"{partition.color}_tripdata_{partition.label}.parquet")


def main() -> int:
    console.keep_order()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=5000, help="rows of each month to check on")
    add_settings_flags(parser)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="taxipipe-check-") as scratch:
        try:
            settings = settings_from(args)
            mirror = Path(scratch) / "mirror"
            mirror.mkdir()
            sample_months(settings, args.rows, mirror)
        except TaxipipeError as exc:
            print(f"❌ could not prepare the sample: {exc}")
            return 1
        settings = settings.model_copy(update={"home": Path(scratch) / "home"})
        settings.data.url_template = str(mirror / "{color}_tripdata_{year}-{month:02d}.parquet")
        settings.mlflow.tracking_uri = None
        context = StepContext(settings, runner="check")
        records: dict = {}
        for step in graph(settings):
            try:
                records[step.name] = run_step(step, context, {name: records[name] for name in step.upstream})
            except TaxipipeError as exc:
                print(f"❌ {step.name}: {exc}")
                return 1
            print(f"✅ {step.name}: {records[step.name].get('summary', 'ok')} ({records[step.name]['seconds']:.2f}s)")
    print(f"✅ all {len(STEPS)} steps work on {args.rows:,}-row samples")
    return 0


if __name__ == "__main__":
    sys.exit(main())
