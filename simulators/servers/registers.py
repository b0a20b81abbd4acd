"""Where each simulated signal is served over Modbus: unit, register table, type, word order.

One Modbus unit per zone (and one for plant-wide signals), all behind one TCP server per site.
Addresses are assigned in signal order, so a site's map is deterministic. The mix of tables,
types and word orders is deliberate: it is what real RTUs serve, and what the gateway must read.

| kind                          | table    | type    | word order | scale |
|-------------------------------|----------|---------|------------|-------|
| status (pumps, breakers)      | coil     | bool    | -          | 1     |
| level                         | input    | int16   | -          | 0.01  |
| current                       | input    | float32 | CDAB       | 1     |
| everything else               | holding  | float32 | ABCD       | 1     |
"""

from __future__ import annotations

from dataclasses import replace

from simulators.signals import Signal

_LAYOUT: dict[str, tuple[str, str, str, float]] = {
    "status": ("coil", "bool", "ABCD", 1.0),
    "level": ("input", "int16", "ABCD", 0.01),
    "current": ("input", "float32", "CDAB", 1.0),
}
_DEFAULT = ("holding", "float32", "ABCD", 1.0)
_WIDTH = {"bool": 1, "int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2,
          "int64": 4, "float64": 4}


def device_name(site: str, zone: str | None) -> str:
    return f"{site}-{zone or 'plant'}"


def assign_addresses(site: str, signals: list[Signal]) -> list[Signal]:
    """Signals with `device`, `unit_id`, `register`, `address`, `type`, `word_order`, `scale`.

    >>> from simulators.signals import Signal
    >>> s = assign_addresses("water", [Signal("a", "flow", "m3/h", zone="dma1"),
    ...                                 Signal("b", "flow", "m3/h", zone="dma1")])
    >>> [(x.device, x.unit_id, x.register, x.address) for x in s]
    [('water-dma1', 1, 'holding', 0), ('water-dma1', 1, 'holding', 2)]
    """
    units: dict[str, int] = {}
    next_address: dict[tuple[str, str], int] = {}
    out = []
    for sig in signals:
        device = device_name(site, sig.zone)
        unit_id = units.setdefault(device, len(units) + 1)
        register, type_, order, scale = _LAYOUT.get(sig.kind, _DEFAULT)
        address = next_address.get((device, register), 0)
        next_address[(device, register)] = address + _WIDTH[type_]
        out.append(replace(sig, device=device, unit_id=unit_id, register=register,
                           address=address, type=type_, word_order=order, scale=scale))
    return out
