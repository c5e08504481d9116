#!/usr/bin/env python
"""The simple, class-based runner: every step of the pipeline in order, in one process.

    python examples/simple_pipeline.py --year 2021 --month 1

Same flags as `taxipipe run`; the steps themselves live in the taxipipe package.
"""

import argparse
import sys

from taxipipe.flags import add_settings_flags, settings_from
from taxipipe.runners.session import example
from taxipipe.runners.simple import SimplePipeline


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_settings_flags(parser)
    return example(lambda args, started: SimplePipeline(settings_from(args)).run(), parser)


if __name__ == "__main__":
    sys.exit(main())
