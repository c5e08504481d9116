"""The TLC zone table (taxi_zone_lookup.csv): a name for each LocationID, so reports say
"74 East Harlem North" instead of "74".

It is fetched like a month, beside the months of `data.url_template` (the TLC's own
template: its misc/ folder), into HOME/downloads/ and reused from there. Without it the zones
keep their ids and `ZoneNames.note` says why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from taxipipe.errors import CorruptDataError, DataNotFoundError, TaxipipeError
from taxipipe.layout import ZONE_FILE, Home

if TYPE_CHECKING:
    from taxipipe.config import Settings
    from taxipipe.partition import Partition

TLC_ZONE_URL = "https://d37ci6vzurychx.cloudfront.net/misc/" + ZONE_FILE
#: Zone cells that name no place (the table's last two rows); the borough is used instead.
NO_NAME = {"", "N/A", "NA", "NV"}


@dataclass(frozen=True)
class ZoneNames:
    """LocationID -> zone name; empty with a `note` when the table could not be had."""

    names: dict[int, str] = field(default_factory=dict)
    note: str | None = None

    def label(self, zone: int) -> str:
        """`74 East Harlem North`, or `74` for a zone the table does not name."""
        name = self.names.get(zone)
        return f"{zone} {name}" if name else str(zone)


def table_url(template: str, partition: Partition) -> str:
    """Where the zone table is: the TLC's misc/ folder, or the folder of a mirror's months."""
    from taxipipe.config import DEFAULT_URL_TEMPLATE
    from taxipipe.tlc import source_url

    if template == DEFAULT_URL_TEMPLATE:
        return TLC_ZONE_URL
    folder, slash, _ = source_url(template, partition).rpartition("/")
    return folder + slash + ZONE_FILE


def read_table(path: Path, source: str | None = None) -> dict[int, str]:
    """The names of a zone table file; CorruptDataError when it is not one."""
    import csv

    try:
        with path.open(newline="", encoding="utf-8") as lines:
            rows = csv.DictReader(lines)
            if not {"LocationID", "Borough", "Zone"} <= set(rows.fieldnames or ()):
                raise ValueError("no LocationID, Borough and Zone columns")
            names = {int(row["LocationID"]): _name(row["Zone"], row["Borough"]) for row in rows}
        if not names:
            raise ValueError("it has no rows")
    except (OSError, UnicodeDecodeError, ValueError, TypeError) as exc:
        raise CorruptDataError(f"{source or path} is not a TLC zone table ({exc})") from None
    return {zone: name for zone, name in names.items() if name}


def check_table(path: Path, source: str | None = None) -> None:
    """`tlc.fetch`'s check of a downloaded zone table."""
    read_table(path, source)


def zone_names(settings: Settings, partition: Partition) -> ZoneNames:
    """The zone names (fetched into HOME/downloads/ once), or none with a note saying why."""
    from taxipipe.tlc import fetch

    url = table_url(settings.data.url_template, partition)
    path = Home(settings.home).zone_table
    try:
        fetch(url, path, retries=0, backoff_seconds=0, check=check_table)
        return ZoneNames(read_table(path))
    except TaxipipeError as exc:
        reason = {DataNotFoundError: "it is not there", CorruptDataError: "it is not a zone table"}.get(
            type(exc), "it could not be downloaded")
        return ZoneNames(note=f"zones are shown by LocationID: the zone table {url} could not be had ({reason})")


def _name(zone: str | None, borough: str | None) -> str:
    for name in ((zone or "").strip(), (borough or "").strip()):
        if name not in NO_NAME:
            return name
    return ""
