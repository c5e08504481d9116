"""A data partition: one taxi colour and one month of TLC trip records, and month arithmetic."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Literal

Color = Literal["green", "yellow"]

#: Months from the month a scheduled run starts in back to the newest month it reads (its
#: validation month): the TLC publishes a month's records about two months after the month
#: ends, so three months back is surely out. Every schedule (Airflow, Prefect, Dagster) uses it.
PUBLICATION_LAG_MONTHS = 3


@dataclass(frozen=True, order=True)
class Partition:
    """A month of one taxi colour, e.g. green 2021-01."""

    color: str
    year: int
    month: int

    @classmethod
    def of(cls, color: str, day: date) -> Partition:
        """The month that contains `day`."""
        return cls(color, day.year, day.month)

    @classmethod
    def parse(cls, color: str, label: str) -> Partition:
        """The month of a `2021-01` label."""
        year, month = label.split("-")
        return cls(color, int(year), int(month))

    @property
    def label(self) -> str:
        """`2021-01`: the month as TLC file names spell it."""
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def key(self) -> str:
        """`green/2021-01`: a stable, path-safe identifier."""
        return f"{self.color}/{self.label}"

    def shift(self, months: int) -> Partition:
        """The month `months` later (earlier when negative), across year boundaries."""
        index = self.year * 12 + self.month - 1 + months
        return Partition(self.color, index // 12, index % 12 + 1)

    def next(self) -> Partition:
        """The following month; December rolls into January of the next year."""
        return self.shift(1)

    def __str__(self) -> str:
        return f"{self.color} {self.label}"


def scheduled_training_month(color: str, started: date) -> Partition:
    """The training month of a scheduled run started on `started`.

    Its validation month, the month after, is the newest one surely published by then
    (`PUBLICATION_LAG_MONTHS` before the start): a run started in 2021-05 trains on 2021-01.
    """
    return Partition.of(color, started).shift(-PUBLICATION_LAG_MONTHS - 1)
