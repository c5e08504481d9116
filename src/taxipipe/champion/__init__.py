"""The champion: which registered version takes the `champion` alias, and how it moves.

`protocol` holds the protocol top to bottom (lookup, fair, score, judge, register, settle,
promote) and `lock` the promotion lock under which the alias moves; the rule itself is the
pure function `taxipipe.gate.judge`.
"""

from taxipipe.champion.lock import PROMOTION_LEASE_SECONDS, promotion_lock
from taxipipe.champion.protocol import (INTERRUPTED, PENDING, PROMOTION_TAG, REPLACED, TRAINED_ON_TAG, Deployment,
                                        Judgement, deploy, judge, lookup, model_description, promote, score, trained_on)

__all__ = [
    "INTERRUPTED", "PENDING", "PROMOTION_LEASE_SECONDS", "PROMOTION_TAG", "REPLACED", "TRAINED_ON_TAG", "Deployment",
    "Judgement", "deploy", "judge", "lookup", "model_description", "promote", "promotion_lock", "score", "trained_on",
]
