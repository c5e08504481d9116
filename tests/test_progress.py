"""Training progress: redrawn in place on a terminal, a line every few seconds elsewhere."""

from __future__ import annotations

import io
import sys
from typing import TYPE_CHECKING

import numpy as np

from tests.helpers import REPO, run_on_terminal

if TYPE_CHECKING:  # XGBoost loads in the tests, not at collection: every parallel worker collects every module
    from taxipipe.progress import TrainingProgress


def train(rounds: int, *callbacks: TrainingProgress) -> None:
    import xgboost as xgb

    rng = np.random.default_rng(0)
    features = rng.normal(size=(500, 3))
    target = features @ np.array([1.0, 2.0, 3.0]) + rng.normal(size=500)
    data = xgb.DMatrix(features, label=target)
    xgb.train({"max_depth": 2, "seed": 1}, data, num_boost_round=rounds, evals=[(data, "validation")],
              verbose_eval=False, callbacks=list(callbacks))


def test_off_a_terminal_a_plain_line_every_interval() -> None:
    from taxipipe.progress import TrainingProgress

    every_round, hourly = io.StringIO(), io.StringIO()
    seen: list[tuple[int, float]] = []
    train(30, TrainingProgress(30, stream=every_round, interval=0.0, on_round=lambda n, s: seen.append((n, s))),
          TrainingProgress(30, stream=hourly, interval=3600.0))
    lines = every_round.getvalue().splitlines()
    assert len(lines) == 30 and "\r" not in every_round.getvalue()
    assert lines[0].startswith("   round 1/30, validation RMSE ") and lines[-1].endswith(", 0 s left")
    assert hourly.getvalue() == ""
    assert [n for n, _ in seen] == [10, 20, 30] and seen[0][1] > seen[-1][1]


def test_on_a_terminal_one_line_redrawn_then_cleared() -> None:
    """A real pseudo-terminal: the line is redrawn in place and wiped when training ends."""
    from taxipipe.progress import CLEAR_LINE

    script = ("import sys\nfrom tests.test_progress import train\nfrom taxipipe.progress import TrainingProgress\n"
              "train(40, TrainingProgress(40, interval=0.0))\nprint('done', file=sys.stderr)\n")
    status, text = run_on_terminal([sys.executable, "-c", script], cwd=REPO, timeout=120)
    assert status == 0, text
    assert f"{CLEAR_LINE}   round " in text and "validation RMSE" in text and "s left" in text
    assert "\n   round" not in text
    assert text.rstrip().endswith(f"{CLEAR_LINE}done")
