"""Data quality rules for a TLC month, and the report they produce.

The rules are a pandera schema; `check_trips` runs it lazily (every rule, not just the first
failure) and turns pandera's failure cases into a per-rule report with counts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from taxipipe.ride_rules import AT_MOST, MAX_MILES, MAX_ZONE, MIN_ZONE, NOT_NEGATIVE, ZONE_RULE
from taxipipe.tlc import DROPOFF, PICKUP

if TYPE_CHECKING:
    import pandas as pd
    import pandera.pandas as pa


@dataclass
class RuleResult:
    rule: str
    failed_rows: int
    passed: bool


@dataclass
class QualityReport:
    """The outcome of every rule on one file."""

    source: str
    rows: int
    rules: list[RuleResult]

    @property
    def passed(self) -> bool:
        return all(rule.passed for rule in self.rules)

    def failures(self) -> list[RuleResult]:
        return [rule for rule in self.rules if not rule.passed]

    def summary(self) -> str:
        """The failed rules, e.g. `PULocationID in 1..265: 12 of 64,572 rows`."""
        return "; ".join(
            f"{r.rule}: {r.failed_rows:,} of {self.rows:,} rows" if r.failed_rows else f"{r.rule}: failed"
            for r in self.failures()
        )

    def as_record(self) -> dict:
        return {"source": self.source, "rows": self.rows, "passed": self.passed,
                "rules": [asdict(rule) for rule in self.rules]}


def trip_schema(min_positive_duration_share: float) -> pa.DataFrameSchema:
    """The rules: non-empty, datetimes present, zones and distance those of a valid ride
    (`ride_rules`), and enough rows with the dropoff after the pickup."""
    import pandera.pandas as pa

    zone = pa.Check.in_range(MIN_ZONE, MAX_ZONE, name=ZONE_RULE)
    return pa.DataFrameSchema(
        {
            PICKUP: pa.Column("datetime64[us]", nullable=False),
            DROPOFF: pa.Column("datetime64[us]", nullable=False),
            "PULocationID": pa.Column("int32", zone, nullable=False),
            "DOLocationID": pa.Column("int32", zone, nullable=False),
            "trip_distance": pa.Column("float64", [pa.Check.ge(0, name=NOT_NEGATIVE),
                                                    pa.Check.le(MAX_MILES, name=AT_MOST)], nullable=False),
        },
        checks=[
            pa.Check(lambda df: len(df) > 0, name="non-empty"),
            pa.Check(
                lambda df: (df[DROPOFF] > df[PICKUP]).mean() >= min_positive_duration_share,
                name=f"positive duration in at least {min_positive_duration_share:.0%} of rows",
            ),
        ],
        strict=False,
    )


def check_trips(
    frame: pd.DataFrame, source: str, min_positive_duration_share: float, max_invalid_row_share: float
) -> QualityReport:
    """Run every rule; a row-level rule passes while its failures stay within the tolerated share."""
    import pandera.errors as pe

    schema = trip_schema(min_positive_duration_share)
    failed: dict[str, int] = {}
    try:
        schema.validate(frame, lazy=True)
    except pe.SchemaErrors as exc:
        keys = ["column", "check", "check_number"]
        for (column, check, number), group in exc.failure_cases.groupby(keys, dropna=False, sort=False):
            failed[_label(schema, column, check, number)] = len(group)
    rows = len(frame)
    empty_rule, positive_rule = (check.name for check in schema.checks)
    if empty_rule in failed:
        failed[empty_rule] = 0
    if positive_rule in failed:
        failed[positive_rule] = int((~(frame[DROPOFF] > frame[PICKUP])).sum())
    names = _rule_names(schema)
    names += [name for name in failed if name not in names]
    row_rules = set(names) - {check.name for check in schema.checks}
    rules = [
        RuleResult(
            rule=name,
            failed_rows=failed.get(name, 0),
            passed=name not in failed
            or (name in row_rules and rows > 0 and failed[name] / rows <= max_invalid_row_share),
        )
        for name in names
    ]
    return QualityReport(source=source, rows=rows, rules=rules)


def _label(schema: pa.DataFrameSchema, column: object, check: str, number: object) -> str:
    """The rule name of one pandera failure case."""
    if not isinstance(column, str):
        return schema.checks[int(number)].name
    if check == "not_nullable":
        return f"{column} not null"
    if number == number and number is not None and column in schema.columns:
        return f"{column} {schema.columns[column].checks[int(number)].name}"
    return f"{column} {check}"


def _rule_names(schema: pa.DataFrameSchema) -> list[str]:
    names = [f"{name} {check.name}" for name, column in schema.columns.items() for check in column.checks]
    names += [f"{name} not null" for name, column in schema.columns.items() if not column.nullable]
    return names + [check.name for check in schema.checks]
