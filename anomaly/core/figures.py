"""Numbers in alarm messages: the size the evidence supports, two or three significant figures.

An operator reads "leak of ~4.1 L/s" and "level up 12 % from its usual 41.2 degC"; more
digits claim a precision no meter gives, and scientific notation is not for a control room.
Every message figure goes through `significant` (the alarm gate formats the detectors'
`value`, `limit` and details with it).

>>> [significant(x) for x in (41.234, 0.012345, 1234.5, 99.96, -0.5, 0.0, 250000.0)]
['41.2', '0.0123', '1230', '100', '-0.5', '0', '250000']
>>> significant(12.34, 2), significant(float("nan"))
('12', '?')
"""

from __future__ import annotations

import math

DIGITS = 3


def significant(x: float | None, digits: int = DIGITS) -> str:
    """`x` rounded to `digits` significant figures, in plain notation, without trailing
    zeros; "?" for a missing or non-finite value."""
    if x is None or not math.isfinite(x):
        return "?"
    if x == 0:
        return "0"
    exponent = math.floor(math.log10(abs(x)))
    if abs(exponent) > 12:  # beyond any meter: notation is the lesser evil
        return f"{x:.{digits}g}"
    decimals = digits - 1 - exponent
    rounded = round(x, decimals)
    if rounded != 0 and math.floor(math.log10(abs(rounded))) > exponent:
        decimals -= 1  # 99.96 rounds up to 100: one digit fewer after the point
        rounded = round(x, decimals)
    text = f"{rounded:.{max(decimals, 0)}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def percent(ratio: float, digits: int = 2) -> str:
    """A fraction as a percentage of `digits` significant figures: 0.1234 -> "12"."""
    return significant(100.0 * ratio, digits)
