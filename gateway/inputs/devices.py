"""What every input builds its sessions from: the site's points grouped by device, and the
device's status entry (registered once, whichever input asks first)."""

from __future__ import annotations

from gateway.site.model import Device, Point, Site
from gateway.status import DeviceStatus, GatewayStatus


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
