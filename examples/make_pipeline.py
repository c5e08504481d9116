#!/usr/bin/env python
"""The seed's make-like pipeline: build a target, running only the steps that are out of date.

    python examples/make_pipeline.py deploy                      # the default target
    python examples/make_pipeline.py --list                      # targets and their dependencies
    python examples/make_pipeline.py deploy --force              # rebuild the whole chain
    python examples/make_pipeline.py --clean                     # remove the partition's files and state
    python examples/make_pipeline.py deploy --year 2023 --month 2
    python examples/make_pipeline.py validate                    # run only up to the model gate

It is `taxipipe make` under the seed's name; `--help` lists every option.
"""

import sys

from taxipipe.cli import main

if __name__ == "__main__":
    sys.exit(main(["make", *sys.argv[1:]]))
