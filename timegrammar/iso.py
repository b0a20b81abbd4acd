"""The one way a time becomes text: UTC ISO 8601 with `Z`, from integer nanoseconds since the
epoch, truncated to the precision its reader needs: the API's times exact (its `next_start`
cursor must not lose a reading), its columns of readings and an alarm's times to the
millisecond, a token's dates to the second.

>>> iso(0), iso(1_500_000_000), iso(1)
('1970-01-01T00:00:00Z', '1970-01-01T00:00:01.500Z', '1970-01-01T00:00:00.000000001Z')
>>> iso(1_500_700_000, "ms"), iso(1_000_000_001, "ms"), iso(1_500_700_000, "s")
('1970-01-01T00:00:01.500Z', '1970-01-01T00:00:01.000Z', '1970-01-01T00:00:01Z')
>>> iso(1_000_000_000, "ms"), iso(1_000_000_000, "ms", fixed=True)
('1970-01-01T00:00:01Z', '1970-01-01T00:00:01.000Z')
>>> iso_column(np.array([0, 1_500_700_000]), "ms")
['1970-01-01T00:00:00.000Z', '1970-01-01T00:00:01.500Z']
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

import numpy as np

Precision = Literal["s", "ms", "us", "ns"]
_DIGITS: dict[str, int] = {"s": 0, "ms": 3, "us": 6, "ns": 9}
NS = 1_000_000_000


def iso(ns: int, precision: Precision | Literal["exact"] = "exact", *,
        fixed: bool = False) -> str:
    """`ns` truncated to `precision`, with all of its digits unless the time is a whole second
    (and not `fixed`: then all of them always). "exact": as many groups of three digits as the
    time needs, none for a whole second."""
    seconds, frac = divmod(int(ns), NS)
    text = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if precision == "exact":
        digits = f"{frac:09d}".rstrip("0")
        digits = digits.ljust(-(-len(digits) // 3) * 3, "0")
    else:
        digits = f"{frac:09d}"[:_DIGITS[precision]] if frac or fixed else ""
    return f"{text}.{digits}Z" if digits else f"{text}Z"


def iso_column(ns: np.ndarray, precision: Precision) -> list[str]:
    """A column of times as `iso(..., fixed=True)` writes each, in one vectorised call (no
    Python per row)."""
    moments = np.asarray(ns, dtype=np.int64).view("datetime64[ns]").astype(
        f"datetime64[{precision}]")
    return np.datetime_as_string(moments, unit=precision, timezone="UTC").tolist()
