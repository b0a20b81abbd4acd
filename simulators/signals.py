"""What a simulated site measures: one `Signal` per sensor, with its Modbus/OPC UA address."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Signal:
    """One measured quantity of a simulated site.

    `noise` is the standard deviation of the sensor's measurement noise and `resolution` its
    quantisation step, both in engineering units; a meter with a `cutoff` reads exactly 0
    below it, as flow meters do (so that they read 0, not noise, while their pump is off).
    A `floor` is the lowest reading the instrument can give whatever its noise: a motor
    current is an RMS magnitude, so its transducer reads 0 A, never -1.5 A, at a stopped
    motor.
    The Modbus fields say where the value is served; `address` is None until
    `simulators.servers.registers.assign_addresses` places it.
    """

    tag: str
    kind: str  # DESIGN.md point kind: pressure|flow|level|status|voltage|current|...
    unit: str
    zone: str | None = None
    role: str | None = None  # inflow|outflow for zone balances
    lo: float | None = None  # physical range of the sensor
    hi: float | None = None
    nominal: float | None = None  # rated value (voltage, frequency), for the site file
    noise: float = 0.0
    resolution: float = 0.0
    cutoff: float = 0.0  # a flow meter's low-flow cut-off: readings below it in size read 0
    floor: float | None = None  # the lowest reading (an RMS magnitude: 0)
    area: float | None = None  # a tank level's water surface in m2, for the site file
    description: str = ""
    # Modbus mapping
    device: str = ""  # name of the Modbus unit serving it
    unit_id: int = 1
    register: str = "holding"  # holding|input|coil|discrete
    address: int | None = None
    type: str = "float32"
    word_order: str = "ABCD"
    scale: float = 1.0  # raw register value * scale = engineering value
