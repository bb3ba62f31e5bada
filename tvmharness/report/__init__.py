"""Reports read only the results store."""

import math


def present(value) -> bool:
    """A stored number that is there: not None, not NaN (pandas' empty cell)."""
    return value is not None and not (isinstance(value, float) and math.isnan(value))
