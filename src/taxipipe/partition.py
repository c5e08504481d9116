"""A data partition: one taxi colour and one month of TLC trip records."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Color = Literal["green", "yellow"]


@dataclass(frozen=True, order=True)
class Partition:
    """A month of one taxi colour, e.g. green 2021-01."""

    color: str
    year: int
    month: int

    @property
    def label(self) -> str:
        """`2021-01`: the month as TLC file names spell it."""
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def key(self) -> str:
        """`green/2021-01`: a stable, path-safe identifier."""
        return f"{self.color}/{self.label}"

    def next(self) -> Partition:
        """The following month; December rolls into January of the next year."""
        if self.month == 12:
            return Partition(self.color, self.year + 1, 1)
        return Partition(self.color, self.year, self.month + 1)

    def __str__(self) -> str:
        return f"{self.color} {self.label}"
