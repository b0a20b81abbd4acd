"""Durations and relative times: one grammar for the API, the command line, scenario files and
site files (DESIGN.md, conventions).

A duration is one or more `<number><unit>` parts, optionally spaced, summed: `500ms`, `30s`,
`10m` or `10min` (minutes, as InfluxDB and Grafana read `m`), `1h30m`, `7d`, `1w`, `1.5h`.
A number alone is seconds (`90`). A relative time is `now`, or `-<duration>` / `now-<duration>`
before it. Units are lower-case: Grafana's `M` is months, which this grammar refuses rather
than read as minutes.

Arithmetic is exact (decimal digits, integer nanoseconds): `0.1s` is 100,000,000 ns, and a
duration beyond int64 nanoseconds (about 292 years) is refused with a message, never an
overflow.

>>> parse_duration("1h30m") // NS, parse_duration("500ms"), parse_duration("90") // NS
(5400, 500000000, 90)
>>> seconds("10min"), seconds(2.5)
(600.0, 2.5)
>>> relative("-10m", 3600 * NS) // NS, relative("now", 5), relative("2026-01-05", 0)
(3000, 5, None)
>>> format_duration(5400 * NS), format_duration(1500 * 10**6)
('1h30m', '1.5s')
"""

from __future__ import annotations

import re
import time
from decimal import Decimal, InvalidOperation

NS = 1_000_000_000
MAX_NS = 2**63 - 1  # int64 nanoseconds: about 292 years, and times up to April 2262
UNIT_NS = {"ms": 1_000_000, "s": NS, "m": 60 * NS, "min": 60 * NS, "h": 3600 * NS,
           "d": 86400 * NS, "w": 7 * 86400 * NS}
MAX_DIGITS = 40  # more digits than any duration that fits is not a typo we need to read
HELP = "a duration such as 500ms, 30s, 10m (or 10min: minutes), 1h30m, 7d, 1w; a number " \
    "alone is seconds"
LONGEST = f"at most {MAX_NS // UNIT_NS['d']}d, about 292 years"
RELATIVE_HELP = "a relative time such as now, -10m, -1h30m, -7d"

_PART = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|min|m|s|h|d|w)?", re.ASCII)
_FORMAT_UNITS = (("w", 7 * 86400 * NS), ("d", 86400 * NS), ("h", 3600 * NS), ("m", 60 * NS),
                 ("s", NS))


class DurationError(ValueError):
    """Text that is not a duration (or is one beyond what int64 nanoseconds hold)."""


class DurationTooLong(DurationError):
    """A duration beyond MAX_NS: a caller with a bound of its own may say that one instead."""


def parse_duration(text: str) -> int:
    """Nanoseconds in `text` (see the module docstring); DurationError when it is not a
    duration or exceeds MAX_NS."""
    return _parse(text.strip(), text)


def _parse(s: str, text: str) -> int:
    pos, total = 0, Decimal(0)
    parts = 0
    while pos < len(s):
        m = _PART.match(s, pos)
        if m is None or (m.group(2) is None and (parts or m.end() < len(s))):
            hint = " (M, months, is not a unit here)" if "M" in s else ""
            raise DurationError(f"{_show(text)} is not a duration{hint}; use {HELP}")
        number = m.group(1)
        if len(number) > MAX_DIGITS:
            raise DurationTooLong(f"{_show(text)} is too long a duration ({LONGEST})")
        try:
            total += Decimal(number) * UNIT_NS[m.group(2) or "s"]
        except InvalidOperation:
            raise DurationError(f"{_show(text)} is not a duration; use {HELP}") from None
        parts += 1
        pos = m.end()
    if not parts:
        raise DurationError(f"{_show(text)} is not a duration; use {HELP}")
    if total > MAX_NS:
        raise DurationTooLong(f"{_show(text)} is too long a duration ({LONGEST})")
    return int(total.to_integral_value())


def seconds(value: str | float) -> float:
    """Seconds in a site-file, scenario-file or command-line value: a number is seconds,
    text is a duration. DurationError for text that is not one, or a negative number."""
    if isinstance(value, bool):
        raise DurationError(f"expected a duration, got {str(value).lower()}")
    if isinstance(value, int | float):
        if not value >= 0:
            raise DurationError(f"a duration cannot be negative, got {value}")
        return float(value)
    return parse_duration(value) / NS


def now_ns() -> int:
    """Now, in ns since the epoch, to the millisecond: the gateway's receipt stamps, the alarm
    store's transitions and the API's "now" (so that `-1h` reads back as a round time)."""
    t = time.time_ns()
    return t - t % 1_000_000


def relative(text: str, now_ns: int) -> int | None:
    """Nanoseconds since the epoch of a relative time (`now`, `-10m`, `now-1h`), or None when
    `text` is not written as one (an absolute time, for the caller to read)."""
    s = text.strip()
    if s.lower() == "now":
        return now_ns
    rest = s[3:].lstrip() if s[:3].lower() == "now" else s
    if not rest.startswith("-"):
        return None
    return now_ns - _parse(rest[1:].strip(), text)


def format_duration(ns: int) -> str:
    """A duration in this grammar, whole units largest first, the last one with a fraction
    where needed: 5,400 s -> `1h30m`, 1.5 s -> `1.5s`, 0.25 s -> `250ms`."""
    if ns < NS:
        return f"{ns / 1e6:g}ms"
    out = []
    for unit, size in _FORMAT_UNITS:
        if ns >= size and unit != "s":
            out.append(f"{ns // size}{unit}")
            ns %= size
    if ns or not out:
        out.append(f"{ns / NS:.9g}s")
    return "".join(out)


def _show(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:37] + "...")
