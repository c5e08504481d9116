"""Where registered versions find their pyfunc class: they recorded `taxipipe.serving.TripDurationModel`.

The class lives in `taxipipe.pyfunc`; this name stays so that every version registered before
the move still loads and serves.
"""

from taxipipe.pyfunc import TripDurationModel

__all__ = ["TripDurationModel"]
