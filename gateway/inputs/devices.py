"""What every input builds its sessions from: the site's points grouped by device, the
device's status entry (registered once, whichever input asks first), and the readings that
say a device is unreachable."""

from __future__ import annotations

import numpy as np

from anomaly.core.batch import Batch, Quality
from gateway.site.model import Device, Point, Site
from gateway.status import DeviceStatus, GatewayStatus
from timegrammar import now_ns


def points_by_device(site: Site) -> dict[str, list[tuple[int, Point]]]:
    """Device name -> its points with their index in the site (the batches' point ids)."""
    points: dict[str, list[tuple[int, Point]]] = {}
    for index, p in enumerate(site.points):
        if p.device is not None:
            points.setdefault(p.device, []).append((index, p))
    return points


def device_status(status: GatewayStatus, device: Device) -> DeviceStatus:
    """`device`'s entry in the gateway's status, created on first use."""
    return status.devices.setdefault(
        device.name, DeviceStatus(name=device.name, protocol=device.protocol, bus=device.bus))


def unreachable(points: np.ndarray, cause: int) -> Batch:
    """One bad reading (NaN) with `cause` for each of `points`, stamped now."""
    n = len(points)
    stamps = np.full(n, now_ns(), np.int64)
    return Batch(source_ts=stamps, server_ts=stamps, gateway_ts=stamps, point=points,
                 value=np.full(n, np.nan), quality=np.full(n, Quality.BAD, np.uint8),
                 cause=np.full(n, cause, np.uint32))
