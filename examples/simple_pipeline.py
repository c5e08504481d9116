#!/usr/bin/env python
"""The simple, class-based runner: every step of the pipeline in order, in one process.

    python examples/simple_pipeline.py --year 2021 --month 1

Same flags as `taxipipe run`; the steps themselves live in the taxipipe package.
"""

import argparse
import sys

from taxipipe import console
from taxipipe.flags import add_settings_flags, settings_from
from taxipipe.errors import StepFailed, TaxipipeError
from taxipipe.runners.simple import SimplePipeline


def main() -> int:
    console.keep_order()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_settings_flags(parser)
    args = parser.parse_args()
    try:
        SimplePipeline(settings_from(args)).run()
    except StepFailed:
        return 1
    except TaxipipeError as exc:
        print(f"❌ {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
