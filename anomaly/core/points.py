"""What the engine knows of the points: kind, unit, zone, role, limits, device, as columns.

The engine never sees a site file: `PointInfo.of()` takes anything with the site file's point
attributes (`gateway.site.model.Point`, a dataclass, a namespace), so `anomaly` stays free of the
gateway's configuration code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

ROLE_SIGN = {"inflow": 1.0, "outflow": -1.0}


@dataclass(frozen=True, slots=True)
class PointInfo:
    """One point as the detectors see it.

    >>> PointInfo(tag="dma1.inlet.flow", kind="flow", unit="L/s", zone="dma1", role="inflow")
    PointInfo(tag='dma1.inlet.flow', kind='flow', unit='L/s', zone='dma1', role='inflow', \
lo=None, hi=None, device=None, nominal=None, priority=None, area=None, volume_curve=None)
    """

    tag: str
    kind: str = "other"
    unit: str = ""
    zone: str | None = None
    role: str | None = None  # "inflow" | "outflow": the point's sign in its zone's balance
    lo: float | None = None  # physical limits
    hi: float | None = None
    device: str | None = None  # readings of one device fail together (comms)
    nominal: float | None = None  # rated value (voltage, frequency); None: learned
    priority: str | None = None  # of this point's alarms; None: by alarm kind
    area: float | None = None  # a tank's level point: its water surface, m2
    volume_curve: Sequence[Sequence[float]] | None = None  # ... or [(level, m3), ...]

    @classmethod
    def of(cls, point: object) -> PointInfo:
        return cls(**{name: value for name in cls.__slots__
                      if (value := getattr(point, name, None)) is not None})


class PointTable:
    """The points of a site as parallel arrays, and the zones and devices they belong to.

    >>> t = PointTable([PointInfo("a", "flow", zone="z", role="inflow"), PointInfo("b")])
    >>> t.zones, t.zone_of.tolist(), t.sign.tolist()
    (['z'], [0, -1], [1.0, 0.0])
    """

    def __init__(self, points: Sequence[PointInfo]) -> None:
        points = list(points)
        self.tags = [p.tag for p in points]
        self.kind = np.array([p.kind for p in points], dtype=object)
        self.units = [p.unit for p in points]
        self.zones = sorted({p.zone for p in points if p.zone})
        self.devices = sorted({p.device for p in points if p.device})
        zone_index = {z: i for i, z in enumerate(self.zones)}
        device_index = {d: i for i, d in enumerate(self.devices)}
        # Positions in `zones` and `devices` (-1: none), in 32 bits: 0.2 MB a vector at 50,000
        self.zone_of = np.array([zone_index.get(p.zone or "", -1) for p in points],
                                dtype=np.int32)
        self.device_of = np.array([device_index.get(p.device or "", -1) for p in points],
                                  dtype=np.int32)
        self.sign = np.array([ROLE_SIGN.get(p.role or "", 0.0) for p in points])
        self.lo = np.array([np.nan if p.lo is None else p.lo for p in points], dtype=float)
        self.hi = np.array([np.nan if p.hi is None else p.hi for p in points], dtype=float)
        self.nominal = np.array([np.nan if p.nominal is None else p.nominal
                                 for p in points], dtype=float)
        # Whole PointInfos only of the few points with more than the arrays hold (a priority,
        # a tank's geometry), by index: a copy of every point would cost 6 MB at 50,000.
        self.details = {i: p for i, p in enumerate(points)
                        if p.priority or p.area or p.volume_curve}

    def __len__(self) -> int:
        return len(self.tags)

    def of_kind(self, *kinds: str) -> np.ndarray:
        """Boolean mask of the points of any of `kinds`."""
        return np.isin(self.kind, kinds)

    def driven(self) -> np.ndarray:
        """Boolean mask of the power points from 0 to a rating (a wind or PV unit's feed-in,
        a load's draw): the weather or the process sets their level and how much it moves
        (a PV feed-in under broken cloud against a clear sky), so their own history cannot
        tell a fault from the weather."""
        return self.of_kind("power") & (self.lo == 0.0) & (self.hi > 0.0)

    def zone_name(self, point: int) -> str | None:
        z = int(self.zone_of[point])
        return self.zones[z] if z >= 0 else None

    def device_name(self, point: int) -> str | None:
        d = int(self.device_of[point])
        return self.devices[d] if d >= 0 else None

    def take(self, index: np.ndarray) -> PointTable:
        """The table of the points at `index` (in that order), in the same zones and devices
        (their positions unchanged): for a detector that holds only some of the points."""
        out = object.__new__(PointTable)
        picked = index.tolist()
        n = len(self)
        for name, value in vars(self).items():
            if isinstance(value, np.ndarray) and value.shape[:1] == (n,):
                value = value[index]
            elif name == "tags" or name == "units":
                value = [value[i] for i in picked]
            setattr(out, name, value)
        at = {i: k for k, i in enumerate(picked)}
        out.details = {at[i]: p for i, p in self.details.items() if i in at}
        return out

    def detail(self, point: int) -> PointInfo:
        """The point's priority and tank geometry (all None where it has none)."""
        return self.details.get(point) or PointInfo(self.tags[point])
