"""What every route needs: the site, the historian, the gateway status; picking points."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

import numpy as np
from fastapi import Depends, HTTPException, Request

from gateway.site.model import Point, Site
from gateway.site.tag_index import PointTags, TagIndex

if TYPE_CHECKING:
    from gateway.storage.historian import HistorianReader

StatusSource = Callable[[], dict | None]


@dataclass
class ApiContext:
    site: Site
    historian: HistorianReader
    status: StatusSource  # the gateway's status snapshot, None when there is none
    status_stale_after: float  # seconds; an older snapshot means the gateway is not running
    index: TagIndex = field(init=False)  # tag -> position in site.points
    stale_ns: np.ndarray = field(init=False)  # per point: stale_after × poll_interval + flush

    def __post_init__(self) -> None:
        self.index = TagIndex(PointTags(self.site.points))
        # A reader's batches index its own tag list: it must be the site's, or `latest`
        # would show values under the wrong tags.
        reader_tags = getattr(self.historian, "tags", None)
        if reader_tags is not None and list(reader_tags) != [p.tag for p in self.site.points]:
            raise ValueError("the historian reader must be opened with the site's tags, "
                             "in point order")
        # An OPC UA subscription and an IEC 104 station report changes only: an unchanged
        # value is not stale (a lost connection is recorded as bad readings instead).
        # The historian stores readings up to `flush_interval` after they came.
        late = self.site.historian.flush_interval
        windows = {d.name: np.inf if (d.protocol == "opcua" and d.mode == "subscribe")
                   or d.protocol == "iec104"
                   else (d.stale_after * d.poll_interval + late) * 1e9
                   for d in self.site.devices}
        # A point no device polls (replay only) is stale only while it has no reading.
        self.stale_ns = np.array([windows.get(p.device or "", np.inf) for p in self.site.points],
                                 dtype=np.float64)
        # A polled OPC UA device stores a value again only when it changed (a Modbus device
        # stores every poll): its answers confirm its points' latest readings.
        self._confirming = [d.name for d in self.site.devices if d.protocol == "opcua"]
        index = {name: i for i, name in enumerate(self._confirming)}
        self._device_of = np.array([index.get(p.device or "", -1) for p in self.site.points],
                                   dtype=np.int32)

    def confirmed_ns(self, now: float) -> np.ndarray:
        """Per point, when its OPC UA device last answered (ns; -inf: not OPC UA, unknown, or
        the gateway is not running)."""
        out = np.full(len(self._confirming) + 1, -np.inf)  # the last: every other point
        snapshot = self.status()
        try:
            if snapshot is None or now - float(snapshot["updated"]) > self.status_stale_after:
                return out[self._device_of]
            status = snapshot["devices"]
            for i, name in enumerate(self._confirming):
                if (last := (status.get(name) or {}).get("last_success")) is not None:
                    out[i] = float(last) * 1e9
        except (KeyError, TypeError, ValueError, AttributeError):
            pass  # a status that does not fit: health says so; nothing is confirmed
        return out[self._device_of]

    def position(self, tag: str) -> int:
        """The position of `tag` in site.points; 404 if the site has no such point."""
        if (i := self.index.get(tag)) is None:
            raise HTTPException(404, f"tag: {tag!r} is not a point of site "
                                     f"{self.site.site.name!r}")
        return i

    def point(self, tag: str) -> Point:
        return self.site.points[self.position(tag)]

    def select(self, *, tags: list[str] | None = None, zone: str | None = None,
               kind: str | None = None, device: str | None = None) -> list[int]:
        """Indexes of the points matching every filter given; 404 for an unknown name."""
        points = self.site.points
        zone, device = zone or None, device or None  # empty: no filter, as a form sends it
        _known("zone", zone, {p.zone for p in points if p.zone})
        _known("device", device, {d.name for d in self.site.devices})
        chosen = ([self.position(t) for t in dict.fromkeys(tags)] if tags
                  else range(len(points)))
        return [i for i in chosen
                if (zone is None or points[i].zone == zone)
                and (kind is None or points[i].kind == kind)
                and (device is None or points[i].device == device)]


def _known(param: str, value: str | None, names: Iterable[str]) -> None:
    names = sorted(names)
    if value is not None and value not in names:
        raise HTTPException(404, f"{param}: {value!r} is not a {param} of this site "
                                 f"(known: {', '.join(names) or 'none'})")


def context(request: Request) -> ApiContext:
    return request.app.state.context


Ctx = Annotated[ApiContext, Depends(context)]


def bad_param(param: str, reason: str) -> HTTPException:
    return HTTPException(400, f"{param}: {reason}")
