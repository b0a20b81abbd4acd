"""What the host knows of each edge node (a site): its session (bdSeq, seq, online), the
metrics its births declared, and how its DDATA become batches for the site's historian.

Pure bookkeeping, no I/O: host.py feeds it messages and stores what it returns.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import get_args

import numpy as np

from anomaly.core.batch import Batch
from gateway.northbound.sparkplug import payloads as sp
from gateway.site.model import Point, PointKind
from gateway.storage.spool import PointList

_KINDS = set(get_args(PointKind))
_generations = itertools.count(1)  # PointList keys: the historian caches tag ids by them


@dataclass
class DeviceMetrics:
    """One device's DBIRTH: alias -> position in the site's point list."""

    aliases: np.ndarray  # sorted
    positions: np.ndarray


@dataclass
class SiteLink:
    node: str
    online: bool = False
    bd_seq: int | None = None
    next_seq: int | None = None  # the seq the next message of the session must carry
    born_ns: int | None = None
    died_ns: int | None = None
    points: list[Point] = field(default_factory=list)
    devices: dict[str, DeviceMetrics] = field(default_factory=dict)
    point_list: PointList = field(default_factory=lambda: PointList(0, ()))
    readings_total: int = 0
    duplicates_total: int = 0  # DDATA dropped as already stored (re-sent after a crash)

    # --- session -------------------------------------------------------------------------

    def node_birth(self, payload: sp.Payload, now_ns: int) -> None:
        bd = next((m.long_value for m in payload.metrics if m.name == sp.BD_SEQ), None)
        self.online, self.bd_seq, self.born_ns = True, bd, now_ns
        self.next_seq = (payload.seq + 1) % 256
        self.devices.clear()

    def node_death(self, payload: sp.Payload, now_ns: int) -> bool:
        """True if the death is this session's (its bdSeq matches): an NDEATH of an older
        session, delivered late, must not take a live site offline."""
        bd = next((m.long_value for m in payload.metrics if m.name == sp.BD_SEQ), None)
        if not self.online or (bd is not None and self.bd_seq is not None and bd != self.bd_seq):
            return False
        self.online, self.died_ns, self.next_seq = False, now_ns, None
        return True

    def in_sequence(self, payload: sp.Payload) -> bool:
        """Follow the session's seq; False on a gap (a message lost: ask for a rebirth).
        Counting goes on from this message: the session's births still decode what follows,
        and a re-sent DDATA is stored once whatever its seq."""
        expected = self.next_seq
        self.next_seq = (payload.seq + 1) % 256
        return payload.seq == expected

    # --- metrics -------------------------------------------------------------------------

    def device_birth(self, device: str, payload: sp.Payload) -> None:
        """Every metric of the DBIRTH becomes (or stays) a point `tag` of the site, with
        `device`, unit, limits, kind and zone as born."""
        index = {p.tag: i for i, p in enumerate(self.points)}
        aliases, positions = [], []
        changed = False
        for m in sp.born_metrics(payload):
            point = Point(tag=m.name, device=device, kind=m.kind if m.kind in _KINDS else "other",
                          unit=m.unit, zone=m.zone, lo=m.lo, hi=m.hi)
            if m.name not in index:
                index[m.name] = len(self.points)
                self.points.append(point)
                changed = True
            elif self.points[index[m.name]] != point:
                self.points[index[m.name]] = point
                changed = True
            aliases.append(m.alias)
            positions.append(index[m.name])
        order = np.argsort(aliases)
        self.devices[device] = DeviceMetrics(np.array(aliases, np.int64)[order],
                                             np.array(positions, np.int64)[order])
        if changed:
            self.point_list = PointList(next(_generations), tuple(self.points))

    def device_data(self, device: str, payload: sp.Payload, now_ns: int
                    ) -> tuple[int | None, int | None, Batch]:
        """(record number or None, the record before it in its lane or None, readings) of a
        DDATA; the host drops a record it has stored already."""
        metrics = self.devices[device]
        r = sp.readings(payload)
        k = np.minimum(np.searchsorted(metrics.aliases, r.alias), max(len(metrics.aliases) - 1, 0))
        known = (metrics.aliases[k] == r.alias if len(metrics.aliases)
                 else np.zeros(len(r.alias), bool))  # readings of metrics not born: dropped
        ts = r.ts_ms[known] * 1_000_000
        batch = Batch.of(source_ts=ts, gateway_ts=np.full(len(ts), now_ns),
                         point=metrics.positions[k[known]], value=r.value[known],
                         quality=r.quality[known], cause=r.cause[known])
        return r.record, r.after, batch
