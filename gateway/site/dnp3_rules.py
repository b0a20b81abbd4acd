"""Site-file rules for DNP3 devices and points that span fields (gateway.site.rules calls
them; each yields a `SiteProblem`). Beside the other rules, not in the plugin folder: the site
file knows no driver (docs/architecture.md)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from gateway.site.model import DNP3_GROUPS
from gateway.site.problems import RowName, SiteProblem

if TYPE_CHECKING:
    from gateway.site.model import Device, Point


_KINDS = {1: "binary input", 3: "double-bit binary input", 20: "counter", 30: "analog input"}


def _listed(variations: frozenset[int]) -> str:
    return ", ".join(str(v) for v in sorted(variations))


def dnp3_device_problems(i: int, d: Device) -> list[SiteProblem]:
    if d.master_address == d.outstation_address:
        return [("devices", i, "outstation_address", f"{d.outstation_address} is also the "
                 "master_address: the two ends of a DNP3 link need different addresses")]
    return []


def dnp3_point_problems(devices: Sequence[Device | None], points: Sequence[Point | None],
                        label: RowName) -> list[SiteProblem]:
    """Group, index and variations of each point on a DNP3 device; two points at one group
    and index; points of one group read in different variations (one read covers them all)."""
    by_name = {d.name: d for d in reversed(devices) if d is not None}
    out: list[SiteProblem] = []
    seen: dict[tuple[str, int, int], int] = {}
    read_as: dict[tuple[str, int], int] = {}  # (device, group) -> the first point naming it
    for i, p in enumerate(points):
        device = by_name.get(p.device) if p is not None and p.device is not None else None
        if p is None or device is None or device.protocol != "dnp3":
            continue
        for key in ("group", "index"):
            if getattr(p, key) is None:
                out.append(("points", i, key, f"required for a point on DNP3 device "
                            f"{device.name!r} (its static group and point index, e.g. group "
                            "= 30 and index = 0 for analog input 0)"))
        if p.group is None:
            continue
        if p.group not in DNP3_GROUPS:
            out.append(("points", i, "group", f"{p.group} is not a group the master reads: "
                        + ", ".join(f"{g} ({k})" for g, k in _KINDS.items())))
            continue
        event_group, statics, events = DNP3_GROUPS[p.group]
        if p.variation is not None and p.variation not in statics:
            out.append(("points", i, "variation", f"g{p.group}v{p.variation} is not a static "
                        f"{_KINDS[p.group]} variation the master reads: give one of "
                        f"{_listed(statics)} (0: the outstation's default)"))
        if p.event_variation is not None and p.event_variation not in events:
            out.append(("points", i, "event_variation", f"g{event_group}v{p.event_variation} "
                        f"is not a {_KINDS[p.group]} event variation: give one of "
                        f"{_listed(events)}"))
        first = read_as.setdefault((device.name, p.group), i)
        other = points[first]
        if first != i and other is not None:
            for key in ("variation", "event_variation"):
                if getattr(p, key) != getattr(other, key):
                    out.append(("points", i, key, f"{getattr(p, key)} differs from "
                                f"{getattr(other, key)} of {other.tag!r} "
                                f"({label('points', first)}): the master reads all of group "
                                f"{p.group} of device {device.name!r} in one variation"))
        if p.index is not None:
            was = seen.setdefault((device.name, p.group, p.index), i)
            if was != i and (twin := points[was]) is not None:
                out.append(("points", i, "index", f"group {p.group} index {p.index} of device "
                            f"{device.name!r} is also {twin.tag!r} ({label('points', was)})"))
    return out
