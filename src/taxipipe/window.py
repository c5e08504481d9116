"""The training window: the months a run trains on, and how the window is named."""

from __future__ import annotations

from typing import Sequence

from taxipipe.partition import Partition


def training_window(last: Partition, months: int) -> tuple[Partition, ...]:
    """`months` consecutive months ending at `last`, oldest first."""
    return tuple(last.shift(offset) for offset in range(1 - months, 1))


def window_label(window: Sequence[Partition]) -> str:
    """`2023-01..2023-03` (a one-month window is just its month: `2023-03`)."""
    if len(window) == 1:
        return window[0].label
    return f"{window[0].label}..{window[-1].label}"


def window_key(window: Sequence[Partition]) -> str:
    """`green/2023-01..2023-03`: the window as partitions spell a key."""
    return f"{window[-1].color}/{window_label(window)}"
