"""The bad-input catalogue as a whole: its size and its kinds (clear errors, warnings, and no silent wrong result).

The cases live by area in ``test_bad_inputs_*.py``; each id starts with its kind (see ``unchanged.py``).
``python tests/test_bad_inputs.py`` prints the counts by area and kind.
"""
from collections import Counter

import test_bad_inputs_data
import test_bad_inputs_panels
import test_bad_inputs_setup
import test_bad_inputs_weights
from unchanged import KINDS

AREAS = {"build_model, data, scenes": test_bad_inputs_data.CASES,
         "transfer, checkpoints": test_bad_inputs_weights.CASES,
         "malicious pickles": test_bad_inputs_weights.PICKLE_CASES,
         "freeze, param_groups, schedules": test_bad_inputs_setup.CASES,
         "panels' from_state": test_bad_inputs_panels.CASES}


def counts() -> dict[str, Counter]:
    return {area: Counter(p.id.split("-", 1)[0] for p in cases) for area, cases in AREAS.items()}


def test_the_catalogue_has_at_least_120_cases_of_known_kinds_and_unique_ids():
    ids = [p.id for cases in AREAS.values() for p in cases]
    assert len(ids) >= 120 and len(set(ids)) == len(ids)
    kinds = sum(counts().values(), Counter())
    assert set(kinds) <= set(KINDS), kinds  # no "silent" kind: every case is an error, a warning or a fixed "ok"
    assert kinds["error"] >= 100 and kinds["warn"] >= 3


def table() -> str:
    rows = [("area", *KINDS, "total")]
    by_area = counts()
    for area, c in by_area.items():
        rows.append((area, *(c[k] for k in KINDS), sum(c.values())))
    total = sum(by_area.values(), Counter())
    rows.append(("all", *(total[k] for k in KINDS), sum(total.values())))
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{r[0]:<{width}}" + "".join(f"{v:>7}" for v in r[1:]) for r in rows)


if __name__ == "__main__":
    print(table())
