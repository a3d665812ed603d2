"""A lesson's claims, each stated in words and checked against the value the lesson measured.

``check(claim, value, op, threshold)`` raises an ``AssertionError`` that names the claim, the
measured value and the threshold when ``value op threshold`` does not hold. When the environment
variable ``WORKBENCH_CLAIMS_LOG`` names a file, every check also appends one JSON line to it
(claim, value, op, threshold, holds): ``bench/bench_claims.py`` collects these over seeds and
thread counts to show how far each claim is from failing. With ``WORKBENCH_CLAIMS_KEEP_GOING=1``
a failed check is recorded but does not raise, so that one run measures every claim.

Example:
    >>> check("the loss falls", 0.41, "<", 1.1)
    >>> check("the loss falls", 1.3, "<", 1.1)
    Traceback (most recent call last):
    ...
    AssertionError: the loss falls: measured 1.3, expected < 1.1
"""
from __future__ import annotations

import json
import math
import operator
import os

LOG_VARIABLE = "WORKBENCH_CLAIMS_LOG"
KEEP_GOING_VARIABLE = "WORKBENCH_CLAIMS_KEEP_GOING"
OPERATORS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq}


def _shown(value) -> str:
    if isinstance(value, float) and math.isfinite(value) and value != 0:
        return f"{value:.4g}"
    return repr(value)


def margin(value, op: str, threshold) -> float | None:
    """How far ``value`` is on the right side of ``threshold`` (negative: the claim fails); None for ``==``.

    >>> margin(0.5, ">=", 0.4), margin(0.5, "<", 0.4)
    (0.09999999999999998, -0.09999999999999998)
    """
    if op == "==" or not all(isinstance(v, (int, float)) for v in (value, threshold)):
        return None
    return value - threshold if op in (">", ">=") else threshold - value


def check(claim: str, value, op: str, threshold) -> None:
    """Assert ``value op threshold`` (``op`` one of ``< <= > >= ==``); the message says the claim and the value.

    >>> check("three parameter groups", ["weight", "norm", "bias"], "==", ["weight", "norm", "bias"])
    """
    if op not in OPERATORS:
        raise ValueError(f"op must be one of {list(OPERATORS)} (got {op!r})")
    if not isinstance(claim, str) or not claim:
        raise ValueError(f"claim must be a sentence saying what is checked (got {claim!r})")
    try:
        holds = bool(OPERATORS[op](value, threshold))
    except TypeError:  # e.g. None (never reached) against a number
        holds = False
    log = os.environ.get(LOG_VARIABLE)
    if log:
        record = {"claim": claim, "value": value, "op": op, "threshold": threshold, "holds": holds}
        with open(log, "a", encoding="utf-8") as file:
            file.write(json.dumps(record, default=repr) + "\n")
    if not holds and os.environ.get(KEEP_GOING_VARIABLE) != "1":
        raise AssertionError(f"{claim}: measured {_shown(value)}, expected {op} {_shown(threshold)}")
