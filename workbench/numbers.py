"""One check for the whole numbers every module takes (counts, sizes, indices, seeds).

Example:
    >>> import numpy as np
    >>> whole_number(np.int64(3), "epochs")
    3
    >>> whole_number(2.0, "epochs")
    Traceback (most recent call last):
    ...
    ValueError: epochs must be an integer >= 1 (got 2.0)
"""
from __future__ import annotations

import operator


def whole_number(value, what: str, lo: int = 1, note: str = "") -> int:
    """``value`` as an ``int`` >= ``lo`` (Python's or NumPy's integers; not bools, floats or strings).

    Otherwise a ``ValueError`` naming ``what``; ``note`` is added after the bound (e.g. ``" pixels"``).
    """
    try:
        number = None if isinstance(value, bool) else operator.index(value)
    except TypeError:
        number = None
    if number is None or number < lo:
        raise ValueError(f"{what} must be an integer >= {lo}{note} (got {value!r})")
    return number
