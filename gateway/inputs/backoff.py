"""The backoff every input waits between attempts at an unreachable device or link."""

from __future__ import annotations

import random

BACKOFF_MAX = 60.0  # seconds, cap of a breaker's and a reconnect's backoff


def backoff(failures: int, base: float) -> float:
    """Exponential backoff with equal jitter: in [d/2, d), d = min(cap, base * 2^(n-1)).

    >>> all(0.5 <= backoff(1, 1.0) < 1.0 for _ in range(100))
    True
    >>> backoff(40, 1.0) < BACKOFF_MAX
    True
    """
    d = min(BACKOFF_MAX, base * 2 ** min(failures - 1, 30))
    return d / 2 + random.uniform(0, d / 2)
