"""The champion rule: whether a challenger may take the `champion` alias, as one pure function.

Both models are scored on the challenger's validation month, the month after its training
window. A challenger is promoted only when, in this order:

1. `range`: its RMSE lies within [validation.min_rmse, validation.max_rmse];
2. `first`: there is no champion yet (promoted), or
3. `unfair`: the comparison is fair: neither model trained on the validation month. A
   champion whose window holds that month has seen its rides, so its score there says
   nothing about new data; the challenger is not promoted and the champion is not scored;
4. `worse` / `equal` / `small-gain` / `better`: its RMSE is lower than the champion's by more
   than the noise within which identical runs agree (`RMSE_AGREEMENT`) and by at least
   validation.min_improvement (promoted only on `better`).

The rule's name is the verdict's `rule` (run tag `validation.rule`); its `reason` says the
same in words.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Collection, Protocol

from taxipipe.models.base import RMSE_AGREEMENT


class Rules(Protocol):
    """The settings the rule reads (`config.ValidationSettings`)."""

    min_rmse: float
    max_rmse: float
    min_improvement: float


@dataclass(frozen=True)
class Champion:
    """The champion as the gate sees it: its version, the months it trained on (partition
    keys such as `green/2021-01`) and its RMSE on the validation month (None: not scored)."""

    version: str
    trained_on: Collection[str]
    rmse: float | None = None


@dataclass(frozen=True)
class Verdict:
    promotable: bool
    rule: str
    reason: str


def fair(champion: Champion, challenger_trained_on: Collection[str], validation_month: str) -> bool:
    """Whether neither model trained on `validation_month`, so their scores on it compare."""
    return validation_month not in champion.trained_on and validation_month not in challenger_trained_on


def judge(rmse: float, trained_on: Collection[str], validation_month: str, rules: Rules,
          champion: Champion | None) -> Verdict:
    """The verdict on a challenger with `rmse` on `validation_month`, trained on `trained_on`."""
    if not rules.min_rmse <= rmse <= rules.max_rmse:
        return Verdict(False, "range",
                       f"RMSE {rmse:.4f} is outside the allowed range [{rules.min_rmse}, {rules.max_rmse}]")
    if champion is None:
        return Verdict(True, "first", "no champion yet")
    if not fair(champion, trained_on, validation_month):
        who = f"champion v{champion.version}" if validation_month in champion.trained_on else "this model"
        return Verdict(False, "unfair", f"{who} trained on {validation_month}, the month both would be scored "
                                        "on, so no fair comparison is possible; champion kept")
    if champion.rmse is None:
        raise ValueError("a fair comparison needs the champion's RMSE on the validation month")
    gain = champion.rmse - rmse
    theirs = f"champion v{champion.version}'s {champion.rmse:.4f} on {validation_month}"
    if gain < -RMSE_AGREEMENT:
        return Verdict(False, "worse", f"RMSE {rmse:.4f} is worse than {theirs}")
    if gain <= RMSE_AGREEMENT:
        return Verdict(False, "equal", f"RMSE {rmse:.4f} equals {theirs} (a challenger must be better)")
    if gain < rules.min_improvement:
        return Verdict(False, "small-gain", f"RMSE {rmse:.4f} beats {theirs} by {gain:.4f}, less than "
                                            f"validation.min_improvement {rules.min_improvement}")
    return Verdict(True, "better", f"RMSE {rmse:.4f} beats {theirs} by {gain:.4f}")
