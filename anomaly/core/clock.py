"""The site's local clock: hour of day, day number and day type (weekday, weekend) of source
timestamps, for every detector that learns a daily or weekly pattern (leak's profile bins and
hours, drift's and sensor's hourly profiles, tag anomaly's day-type slots).

A utility's demand follows local time: at UTC+10 a Saturday night's minimum flow falls on a
UTC Friday, and at a daylight-saving change a UTC profile is an hour off until it relearns.
The site file's `[anomaly] time_zone` (an IANA name, default "UTC") sets the zone;
`EngineSettings.time_zone` carries it, and a saved state keeps it (a state learned in another
zone is refused: its profiles are at other hours).

Timestamps stay UTC nanoseconds everywhere (ticks, alarms, saved times); only the calendar
read from them is local: `Clock.local` adds the zone's UTC offset, and `is_weekend`, `day_no`,
`hour_of_day` read the calendar off the result with the same integer arithmetic as on UTC
(so "UTC" gives exactly what the detectors computed before). The offset only changes at a
transition, so it is looked up once per distinct UTC hour (`local_array`: per hour of a
batch; `local`: the last hour asked, as ticks come in order), and per reading only in an
hour that holds a transition (zones whose offset changes off the hour, as Lord Howe's).

Daylight-saving days have 23 or 25 local hours. Detectors keep counting bins and hours in
UTC (their accumulators close one after the other, without gaps or repeats), and only the
labels (hour of day, bin of day, day type) are local:
- spring forward: the skipped local hour's labels do not occur that day; its profile rows
  simply learn nothing that day and nothing is judged against them;
- fall back: the repeated hour's labels occur twice, both judged against, and learning into,
  the same profile rows. Both are the same hour of the night (demand alike), so nothing is
  raised for them; a profile row learns two samples that day, and leak's minimum-night-flow
  window, where it covers the repeated hour, closes twice (the second time on the repeated
  bins alone, a genuine night reading).
tests/anomaly/test_local_time.py holds both changes (no alarm) for a water zone.

>>> c = Clock("Australia/Sydney")
>>> sat = 1_767_967_200 * 10**9  # 2026-01-09T14:00Z: Saturday 01:00 in Sydney (UTC+11)
>>> is_weekend(sat), is_weekend(c.local(sat)), hour_of_day(c.local(sat))
(False, True, 1)
>>> day_no(c.local(sat)) - day_no(sat)
1
>>> hour_of_day(Clock().local(sat))
14
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import overload
from zoneinfo import ZoneInfo

import numpy as np

NS = 10**9
HOUR_NS = 3600 * NS
DAY_NS = 86400 * NS
THURSDAY = 3  # 1970-01-01, day 0, was a Thursday: (day + THURSDAY) % 7 counts from Monday


class Clock:
    """UTC nanoseconds to the site's local nanoseconds (see the module docstring)."""

    def __init__(self, zone: str = "UTC") -> None:
        self.zone = zone
        # None: UTC, no offset to look up (the default's arithmetic is exactly as before)
        self._tz = None if zone == "UTC" else ZoneInfo(zone)
        self._hour = -2**62  # the UTC hour `local` last looked up (none yet) ...
        self._offset = 0  # ... and its offset in ns

    def _offset_at(self, ts_ns: int) -> int:
        assert self._tz is not None
        s = ts_ns // NS
        off = datetime.fromtimestamp(s, tz=UTC).astimezone(self._tz).utcoffset()
        return 0 if off is None else int(off.total_seconds()) * NS

    def local(self, ts_ns: int) -> int:
        """One time (a tick's): its local nanoseconds."""
        if self._tz is None:
            return ts_ns
        hour = ts_ns // HOUR_NS
        if hour != self._hour:
            first, after = self._offset_at(hour * HOUR_NS), self._offset_at((hour + 1) * HOUR_NS)
            if first != after:  # a transition within this hour: exact, not cached
                return ts_ns + self._offset_at(ts_ns)
            self._hour, self._offset = hour, first
        return ts_ns + self._offset

    def local_array(self, ts_ns: np.ndarray) -> np.ndarray:
        """Many times (a batch's source timestamps, int64 ns): their local nanoseconds, the
        offset looked up once per distinct UTC hour."""
        ts = np.asarray(ts_ns, dtype=np.int64)
        if self._tz is None:
            return ts.copy()
        hours, which = np.unique(ts // HOUR_NS, return_inverse=True)
        first = np.array([self._offset_at(h * HOUR_NS) for h in hours.tolist()], dtype=np.int64)
        after = np.array([self._offset_at((h + 1) * HOUR_NS) for h in hours.tolist()],
                         dtype=np.int64)
        off = first[which]
        split = np.flatnonzero((first != after)[which])  # readings in a transition's hour
        off[split] = [self._offset_at(t) for t in ts[split].tolist()]
        return ts + off


@overload
def day_no(local_ns: int) -> int: ...
@overload
def day_no(local_ns: np.ndarray) -> np.ndarray: ...
def day_no(local_ns: int | np.ndarray) -> int | np.ndarray:
    """Local day number (days since 1970-01-01)."""
    return local_ns // DAY_NS


@overload
def is_weekend(local_ns: int) -> bool: ...
@overload
def is_weekend(local_ns: np.ndarray) -> np.ndarray: ...
def is_weekend(local_ns: int | np.ndarray) -> bool | np.ndarray:
    """The day type: Saturday or Sunday (local)."""
    return (day_no(local_ns) + THURSDAY) % 7 >= 5


@overload
def hour_of_day(local_ns: int) -> int: ...
@overload
def hour_of_day(local_ns: np.ndarray) -> np.ndarray: ...
def hour_of_day(local_ns: int | np.ndarray) -> int | np.ndarray:
    """Local hour of day, 0-23."""
    return local_ns // HOUR_NS % 24
