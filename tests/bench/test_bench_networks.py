"""`bench.networks` scoring: a `stuck` label whose tag was frozen at a value it reads at rest
anyway is counted apart (no detector can tell it), and only such a label."""

from __future__ import annotations

import numpy as np
import pytest

from anomaly.core.points import PointInfo
from anomaly.evaluation import Label
from bench.networks import at_rest

STEP = 900 * 10**9
TIMES = np.arange(96) * STEP  # a day of 15-minute readings
FAULT = Label("stuck", "t.level", 40 * STEP, 60 * STEP)
POINTS = [PointInfo("t.level", "level", "m", zone="z", lo=0.0, hi=43.21)]
RNG = np.random.default_rng(1)
DURING = np.zeros(TIMES.size, dtype=bool)
DURING[40:60] = True  # the fault's readings


def kept_shut() -> np.ndarray:
    """A tank its controls keep at 37.11 m: the reading flickers a centimetre either way."""
    return np.round(37.11 + RNG.choice([-0.01, 0.0, 0.0, 0.0, 0.01], TIMES.size), 2)


def filling_and_draining() -> np.ndarray:
    return np.round(30 + 5 * np.sin(np.arange(TIMES.size) / 12), 2)


def held_a_quarter_of_the_time() -> np.ndarray:
    """At its floor a quarter of the day: frozen there in the day, it is seen."""
    v = filling_and_draining()
    v[:24] = 25.0
    return v


def frozen(values: np.ndarray, at: float | None) -> np.ndarray:
    v = values.copy()
    v[DURING] = v[np.argmax(DURING)] if at is None else at
    return v[:, None]


@pytest.mark.parametrize(("values", "expected"), [
    (frozen(kept_shut(), 37.11), True),
    (frozen(filling_and_draining(), 0.0), True),  # at 0: a rest value as before
    (frozen(filling_and_draining(), 43.21), True),  # at its hi
    (frozen(filling_and_draining(), None), False),  # frozen mid-way: a fault to find
    (frozen(held_a_quarter_of_the_time(), 25.0), False),
    (frozen(kept_shut(), 37.5), False),  # kept shut, but frozen elsewhere
])
def test_a_stuck_label_at_a_rest_value_is_counted_apart(values: np.ndarray,
                                                         expected: bool) -> None:
    assert at_rest(FAULT, POINTS, TIMES, values) is expected
