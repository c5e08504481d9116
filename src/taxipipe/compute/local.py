"""Training in memory: the whole window's matrices at once (the fastest while they fit)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from taxipipe.compute.trained import Trained
from taxipipe.config import Settings


def train_in_memory(settings: Settings, encoder: Any, train_path: Path, validation_path: Path,
                    callbacks: Sequence[Any] = ()) -> Trained:
    """The configured model kind on the .npz matrices the features step wrote."""
    from taxipipe.features import load_matrix
    from taxipipe.safety.interrupts import deferred
    from taxipipe.models.registry import get_kind

    train_set = load_matrix(train_path)
    validation_set = load_matrix(validation_path)
    with deferred():
        fit = get_kind(settings.model.kind).train(settings.model, encoder, train_set, validation_set, callbacks)
    return Trained(fit, validation_set[1], int(train_set[1].shape[0]))
