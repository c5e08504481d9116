"""docs/engines.md: the concept map's links point at lines and headings that exist."""

from __future__ import annotations

import re

from tests.helpers import REPO

DOC = REPO / "docs" / "engines.md"
LINK = re.compile(r"\]\(([^)#\s]+)(?:#([^)\s]+))?\)")
CONCEPTS = ("task", "dependency", "per-month fan-out", "retry and backoff", "permanent-error handling",
            "skipping up-to-date work", "schedule", "backfill / partitions", "run parameters", "UI",
            "deployment", "concurrency", "where state lives")


def anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_concept_has_a_row_for_the_five_engines() -> None:
    rows = {line.split("|")[1].strip(): line for line in DOC.read_text().splitlines() if line.startswith("| ")}
    assert rows["concept"].split("|")[2:7] == [" simple ", " make-like ", " Airflow 3 ", " Prefect 3 ", " Dagster "]
    for concept in CONCEPTS:
        assert len(rows[concept].split("|")) == 8, concept


def test_links_point_at_existing_lines_and_headings() -> None:
    links = LINK.findall(DOC.read_text())
    assert len(links) > 50
    for target, fragment in links:
        path = (DOC.parent / target).resolve()
        assert path.is_file(), target
        if fragment.startswith("L"):
            lines = path.read_text().splitlines()
            assert int(fragment[1:]) <= len(lines) and lines[int(fragment[1:]) - 1].strip(), f"{target}#{fragment}"
        elif fragment:
            headings = [anchor(line.lstrip("#")) for line in path.read_text().splitlines() if line.startswith("#")]
            assert fragment in headings, f"{target}#{fragment}"
