"""Boosting progress while XGBoost trains: an XGBoost training callback.

On a terminal one line is redrawn in place (round, validation RMSE, time left); elsewhere
(CI logs, a pipe, a `tee`) a plain line is written every `interval` seconds. Imported only
by the code that trains, so it may import XGBoost at the top.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, TextIO

from xgboost.callback import TrainingCallback

#: Seconds between lines when the stream is not a terminal.
LINE_INTERVAL = 5.0
#: Seconds between redraws on a terminal.
REDRAW_INTERVAL = 0.1
CLEAR_LINE = "\r\x1b[K"


class TrainingProgress(TrainingCallback):
    """Reports each boosting round's validation score on `stream` (stderr by default).

    `interval` is the seconds between lines (default: a redraw every 0.1 s on a terminal, a line
    every 5 s elsewhere). `on_round(round, score)` is called every `every` rounds (e.g. to log the metric to the
    MLflow run, so the UI shows it while training runs).
    """

    def __init__(self, rounds: int, stream: TextIO | None = None, interval: float | None = None,
                 on_round: Callable[[int, float], None] | None = None, every: int = 10) -> None:
        self.rounds, self.on_round, self.every = rounds, on_round, every
        self.stream = stream or sys.stderr
        self.terminal = self.stream.isatty()
        self.interval = interval if interval is not None else REDRAW_INTERVAL if self.terminal else LINE_INTERVAL
        self.started = self.last = 0.0
        self.drawn = False

    def before_training(self, model: Any) -> Any:
        self.started = self.last = time.monotonic()
        return model

    def after_iteration(self, model: Any, epoch: int, evals_log: dict[str, dict[str, list[Any]]]) -> bool:
        done = epoch + 1
        score = _last_score(evals_log)
        now = time.monotonic()
        if self.on_round is not None and score is not None and done % self.every == 0:
            self._clear()
            self.on_round(done, score)
        if now - self.last >= self.interval:
            self.last = now
            self._show(self.describe(done, score, now - self.started))
        return False

    def after_training(self, model: Any) -> Any:
        self._clear()
        return model

    def describe(self, done: int, score: float | None, elapsed: float) -> str:
        """`round 37/100, validation RMSE 6.1234, 12 s left`."""
        left = elapsed / done * (self.rounds - done)
        metric = f", validation RMSE {score:.4f}" if score is not None else ""
        return f"   round {done}/{self.rounds}{metric}, {left:.0f} s left"

    def _show(self, text: str) -> None:
        if self.terminal:
            self.stream.write(CLEAR_LINE + text)
            self.drawn = True
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def _clear(self) -> None:
        if self.drawn:
            self.stream.write(CLEAR_LINE)
            self.stream.flush()
            self.drawn = False


def _last_score(evals_log: dict[str, dict[str, list[Any]]]) -> float | None:
    """The newest value of the first metric of the last evaluation set."""
    for metrics in reversed(evals_log.values()):
        for values in metrics.values():
            last = values[-1]
            return float(last[0] if isinstance(last, tuple) else last)
    return None
