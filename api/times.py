"""Times in and out of the API: ISO 8601 or relative times in, UTC ISO 8601 with `Z` out.

Inside, times are int64 nanoseconds since the Unix epoch, as in `anomaly.core.batch.Batch`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import overload

from timegrammar import HELP, MAX_NS, NS, relative
from timegrammar.iso import iso

# Date, optional time and fraction, optional offset. An offset's `+` arrives as a space when a
# client forgets to URL-encode it (`...T06:00:00 02:00`), so a space before hh:mm means `+`.
_ISO = re.compile(
    r"(\d{4}-\d{2}-\d{2})"
    r"(?:[T ](\d{2}:\d{2}(?::\d{2})?)(?:[.,](\d{1,9}))?)?"
    r"(Z|[+-]\d{2}(?::?\d{2})?| \d{2}:\d{2})?",
    re.IGNORECASE,
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

TIME_HELP = "ISO 8601 (2026-01-05T06:00:00Z, offsets allowed; naive means UTC) or a relative " \
    "time such as -1h, -10m, -1h30m, -7d, now"
DURATION_HELP = HELP


def parse_time(text: str, now_ns: int) -> int:
    """Nanoseconds since the epoch for an ISO 8601 time, `now`, or `-1h` / `now-1h`;
    ValueError naming the text.

    >>> parse_time("2026-01-05T02:00:00+02:00", 0) == parse_time("2026-01-05", 0)
    True
    >>> parse_time("-1h", 7200 * NS) // NS, parse_time("now", 5)
    (3600, 5)
    """
    ns = _parse_time(text.strip(), now_ns)
    if not 0 <= ns <= MAX_NS:
        raise ValueError(f"{text!r} is outside the times this API handles "
                         f"({iso(0)} to {iso(MAX_NS)})")
    return ns


def _parse_time(s: str, now_ns: int) -> int:
    ago = relative(s, now_ns)
    if ago is not None:
        return ago
    if m := _ISO.fullmatch(s):
        try:
            return _iso_ns(*m.groups())
        except ValueError as e:
            raise ValueError(f"{s!r} is not a valid time ({e}); use {TIME_HELP}") from None
    raise ValueError(f"{s!r} is not a time; use {TIME_HELP}")


def _iso_ns(date: str, clock: str | None, fraction: str | None, offset: str | None) -> int:
    offset = (offset or "Z").upper()
    if offset[0] == " ":
        offset = "+" + offset[1:]
    dt = datetime.fromisoformat(f"{date}T{clock or '00:00'}{'+00:00' if offset == 'Z' else offset}")
    seconds = (dt - _EPOCH) // timedelta(seconds=1)
    return seconds * NS + int((fraction or "0").ljust(9, "0"))


@overload
def iso_seconds(t: float) -> str: ...
@overload
def iso_seconds(t: float | None) -> str | None: ...
def iso_seconds(t: float | None) -> str | None:
    """A Unix-seconds time (as in the gateway status) in UTC ISO 8601, to the millisecond."""
    return None if t is None else iso(round(t * 1000) * 1_000_000, "ms")
