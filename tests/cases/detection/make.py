"""Writes the detection cases' recordings: `python tests/cases/detection/make.py`.

Every case is the same two days of one small district metered area (an inlet meter, two
junction pressures on one PLC; a daily demand cycle, a pump 5 h on and 7 h off raising the
pressures 5 m, quantised noisy readings every 5 minutes) with one fault written in, each the
documented behaviour of one detector (docs/anomaly-detection.md). Seeded: the files do not
change from run to run; expected.txt is written by hand, checked against the docs.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
START = datetime(2026, 3, 2, tzinfo=UTC)
STEP_S = 300
HOURS = 48
TAGS = ["z.inlet.flow", "z.j1.pressure", "z.j2.pressure"]

SITE = """\
[site]
name = "{name}"

[[devices]]
name = "plc1"
protocol = "modbus-tcp"
host = "127.0.0.1"

[[points]]
tag = "z.inlet.flow"
device = "plc1"
address = 0
kind = "flow"
unit = "L/s"
zone = "z"
role = "inflow"
lo = 0.0
hi = 100.0

[[points]]
tag = "z.j1.pressure"
device = "plc1"
address = 2
kind = "pressure"
unit = "m"
zone = "z"
lo = 0.0
hi = 100.0

[[points]]
tag = "z.j2.pressure"
device = "plc1"
address = 4
kind = "pressure"
unit = "m"
zone = "z"
lo = 0.0
hi = 100.0
"""


def dma(seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(hours, values (time x tag)) of the healthy area."""
    rng = np.random.default_rng(seed)
    t = np.arange(0, HOURS * 3600, STEP_S)
    demand = 1.0 + 0.6 * np.sin(2 * np.pi * (t / 86400 - 0.3)) ** 2
    pump = ((t / 3600) % 12 < 5).astype(float)
    flow = 30 * demand + rng.normal(0, 0.1, t.size)
    pressure = (45 + 5 * pump)[:, None] - np.array([2.0, 3.0]) * demand[:, None] ** 2
    pressure += rng.normal(0, 0.05, pressure.shape)
    return t / 3600, np.column_stack([np.round(flow, 2), np.round(pressure, 2)])


def clean(hours: np.ndarray, values: np.ndarray) -> None:
    """Nothing wrong: no alarm."""


def limit_excursion(hours: np.ndarray, values: np.ndarray) -> None:
    """j1 over its hi of 100 m for 30 minutes (a pressure-reducing valve failed open)."""
    values[(hours >= 36) & (hours < 36.5), 1] = 112.0


def stuck(hours: np.ndarray, values: np.ndarray) -> None:
    """The inlet meter freezes for 3 hours."""
    frozen = (hours >= 30) & (hours < 33)
    values[frozen, 0] = values[np.argmax(frozen), 0]


def spike(hours: np.ndarray, values: np.ndarray) -> None:
    """A loose connector: one j1 reading 15 m off."""
    values[np.argmax(hours >= 30.5), 1] += 15.0


def comms(hours: np.ndarray, values: np.ndarray) -> None:
    """The PLC's reads fail for an hour (`nan`: bad readings)."""
    values[(hours >= 36) & (hours < 37)] = np.nan


def silent(hours: np.ndarray, values: np.ndarray) -> None:
    """The PLC is silent for an hour without a failed read (empty cells: no reading)."""
    values[(hours >= 36) & (hours < 37)] = np.inf  # written as empty cells below


CASES: dict[str, Callable[[np.ndarray, np.ndarray], None]] = {
    "clean": clean, "limit-excursion": limit_excursion, "stuck-sensor": stuck,
    "spike": spike, "comms-failed-reads": comms, "comms-silent-device": silent,
}


def cell(v: float) -> str:
    return "" if np.isinf(v) else "nan" if np.isnan(v) else f"{v:g}"


def main() -> None:
    for name, fault in CASES.items():
        hours, values = dma()
        fault(hours, values)
        case = HERE / name
        case.mkdir(exist_ok=True)
        (case / "site.toml").write_text(SITE.format(name=f"detection case: {name}"),
                                        encoding="utf-8")
        lines = [",".join(["timestamp", *TAGS])]
        for h, row in zip(hours, values, strict=True):
            stamp = (START + timedelta(hours=float(h))).strftime("%Y-%m-%dT%H:%M:%SZ")
            lines.append(",".join([stamp, *(cell(v) for v in row)]))
        (case / "readings.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
