"""What every way of training returns (its own module, so the modes need not import the package
that picks among them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from taxipipe.models.base import Fit


@dataclass(frozen=True)
class Trained:
    """What training returns: the model kind's fit, the validation target, the rows trained on."""

    fit: Fit
    target: np.ndarray
    train_rows: int
