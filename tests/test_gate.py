"""The champion rule as a table: every rule, its verdict and its reason, in milliseconds."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from taxipipe.gate import Champion, fair, judge


@dataclass(frozen=True)
class Rules:
    min_rmse: float = 0.1
    max_rmse: float = 8.0
    min_improvement: float = 0.0


JAN, FEB, MAR, APR = "green/2021-01", "green/2021-02", "green/2021-03", "green/2021-04"


@pytest.mark.parametrize("rmse, trained_on, validation, rules, champion, promotable, rule, words", [
    (6.05, [JAN], FEB, Rules(), None, True, "first", "no champion yet"),
    (9.00, [JAN], FEB, Rules(), None, False, "range", "outside the allowed range [0.1, 8.0]"),
    (0.05, [JAN], FEB, Rules(), Champion("1", [JAN], 6.0), False, "range", "outside the allowed range"),
    (6.05, [JAN], FEB, Rules(), Champion("1", [JAN], 6.0), False, "worse", "worse than champion v1's 6.0000 on green/2021-02"),
    (6.00, [JAN], FEB, Rules(), Champion("1", [JAN], 6.0), False, "equal", "equals champion v1's"),
    (5.90, [JAN], FEB, Rules(min_improvement=0.5), Champion("1", [JAN], 6.0), False, "small-gain",
     "by 0.1000, less than validation.min_improvement 0.5"),
    (5.40, [JAN], FEB, Rules(min_improvement=0.5), Champion("1", [JAN], 6.0), True, "better", "beats champion v1's 6.0000 on green/2021-02 by 0.6000"),
    (5.90, [JAN], FEB, Rules(), Champion("1", [JAN], 6.0), True, "better", "beats champion v1's"),
    # a champion trained on the validation month (a window of Jan..Mar against a run scored on Feb)
    (6.05, [JAN], FEB, Rules(), Champion("4", [JAN, FEB, MAR]), False, "unfair",
     "champion v4 trained on green/2021-02, the month both would be scored on"),
    (1.00, [JAN], FEB, Rules(), Champion("4", [JAN, FEB, MAR]), False, "unfair", "no fair comparison"),
    # a champion trained on another colour's February has not seen green February
    (5.90, [JAN], FEB, Rules(), Champion("2", ["yellow/2021-02"], 6.0), True, "better", "beats"),
    # a champion trained later than the challenger's validation month is compared fairly
    (5.90, [JAN], FEB, Rules(), Champion("3", [MAR], 6.0), True, "better", "beats champion v3's"),
    (6.10, [MAR], APR, Rules(), Champion("3", [JAN], 6.0), False, "worse", "worse"),
])
def test_rule(rmse, trained_on, validation, rules, champion, promotable, rule, words) -> None:
    verdict = judge(rmse, trained_on, validation, rules, champion)
    assert (verdict.promotable, verdict.rule) == (promotable, rule)
    assert words in verdict.reason


def test_a_challenger_that_trained_on_its_validation_month_is_not_compared() -> None:
    verdict = judge(5.0, [JAN, FEB], FEB, Rules(), Champion("1", [JAN], 6.0))
    assert (verdict.promotable, verdict.rule) == (False, "unfair")
    assert verdict.reason.startswith("this model trained on green/2021-02")


def test_fairness_is_decided_before_the_champion_is_scored() -> None:
    assert not fair(Champion("4", [JAN, FEB, MAR]), [JAN], FEB)
    assert fair(Champion("1", [JAN]), [FEB], MAR)
    with pytest.raises(ValueError, match="needs the champion's RMSE"):
        judge(5.0, [FEB], MAR, Rules(), Champion("1", [JAN]))
