"""Site-file rules for IEC 104 devices and points that span fields (gateway.site.rules
calls them; each yields a `SiteProblem`). Beside the other rules, not in the plugin folder:
the site file knows no driver (docs/architecture.md)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from gateway.site.model import IEC_FAMILY, unknown_zone
from gateway.site.problems import RowName, SiteProblem

if TYPE_CHECKING:
    from gateway.site.model import Device, Point


def iec104_device_problems(i: int, d: Device) -> list[SiteProblem]:
    out: list[SiteProblem] = []
    if d.t2 >= d.t1:
        out.append(("devices", i, "t2", f"{d.t2:g} s must be below t1 ({d.t1:g} s): the "
                    "station waits t1 for our acknowledgement, which we send within t2"))
    if d.w > d.k:
        out.append(("devices", i, "w", f"{d.w} must not be above k ({d.k}): the station "
                    f"stops after k unacknowledged frames, we acknowledge after w "
                    f"(the standard recommends w at most two thirds of k)"))
    if (d.tls_cert is None) != (d.tls_key is None):
        given, missing = ("tls_cert", "tls_key") if d.tls_key is None else ("tls_key",
                                                                           "tls_cert")
        out.append(("devices", i, missing, f"required with {given} (our certificate and "
                    "its key come together)"))
    if d.tls_cert is not None and d.tls_ca is None:
        out.append(("devices", i, "tls_ca", "required with tls_cert: TLS checks the "
                    "station's certificate against it"))
    for key in ("tls_ca", "tls_cert", "tls_key"):
        if (path := getattr(d, key)) is not None and not path.is_file():
            out.append(("devices", i, key, f"{path}: file not found"))
    if (why := unknown_zone(d.time_zone)) is not None:
        out.append(("devices", i, "time_zone", why))
    return out


def iec104_point_problems(devices: Sequence[Device | None], points: Sequence[Point | None],
                          label: RowName) -> list[SiteProblem]:
    """Two points of one device at the same common address, type and IOA."""
    by_name = {d.name: d for d in reversed(devices) if d is not None}
    out: list[SiteProblem] = []
    seen: dict[tuple[str, int, str | None, int], int] = {}
    for i, p in enumerate(points):
        device = by_name.get(p.device) if p is not None and p.device is not None else None
        if p is None or device is None or device.protocol != "iec104" or p.ioa is None:
            continue
        ca = p.common_address if p.common_address is not None else device.common_address
        family = IEC_FAMILY[p.typeid] if p.typeid is not None else None
        first = seen.setdefault((device.name, ca, family, p.ioa), i)
        if first != i:
            out.append(("points", i, "ioa", f"IOA {p.ioa} at common address {ca} of device "
                        f"{device.name!r} is also {points[first].tag!r} "  # type: ignore[union-attr]
                        f"({label('points', first)})" + (f", type {family}" if family else "")))
    return out
