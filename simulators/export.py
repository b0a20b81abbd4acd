"""A simulated run exported as a recording: readings.csv, labels.csv and site.toml.

`readings.csv` is DESIGN.md's wide CSV: `timestamp` (ISO 8601, `Z`), then one column per tag,
an empty cell where no reading came (sensor dropout, or its Modbus unit silent or answering with
an exception). Values carry 7 significant digits (what a float32 register holds), so the same
seed gives the same bytes.
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import numpy as np
from tqdm import tqdm

from simulators.site import SimulatedSite
from simulators.sitefile import write_site_file

_NAN_CELL = re.compile(r"(?<=,)nan(?=,|$)", re.MULTILINE)


def timestamps(site: SimulatedSite, times: np.ndarray) -> list[str]:
    """ISO 8601 `Z` strings for simulated seconds since the site's start."""
    origin = np.datetime64(site.start.replace(tzinfo=None), "ms")
    moments = origin + np.round(times * 1000).astype("timedelta64[ms]")
    unit = "s" if np.all(times == np.round(times)) else "ms"
    return [f"{s}Z" for s in np.datetime_as_string(moments, unit=unit)]


def readings_csv(site: SimulatedSite, times: np.ndarray, values: np.ndarray) -> str:
    row = "%s" + ",%.7g" * len(site.tags)
    lines = [row % (ts, *v) for ts, v in zip(timestamps(site, times), values.tolist(),
                                               strict=True)]
    body = _NAN_CELL.sub("", "\n".join(lines))
    return ",".join(["timestamp", *site.tags]) + "\n" + body + ("\n" if lines else "")


def write_labels(site: SimulatedSite, path: Path, until: float) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow(["kind", "location", "start", "end"])
        out.writerows(site.labels(until))


def export(site: SimulatedSite, out: Path, *, days: float, step: float,
           host: str = "127.0.0.1", modbus_port: int = 5020, opcua_port: int = 4840,
           iec104_port: int = 2404) -> None:
    """Export `days` of simulated time sampled every `step` seconds, from the site's clock start.

    The site must not have been advanced yet; the ports go into site.toml.
    """
    if not (days > 0 and math.isfinite(days)):
        raise ValueError(f"days must be above 0, not {days:g}")
    if not step > 0:
        raise ValueError(f"the step must be above 0 s, not {step:g}")
    if site.time > 0:
        raise ValueError("export needs a site whose clock has not run yet")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    times = np.arange(0.0, days * 86400.0, step)
    steps = math.ceil(times[-1] / site.step)
    with tqdm(total=steps, desc=f"{site.name} export", unit="step", mininterval=0.5) as bar:
        values = site.run(times, on_step=bar.update)
    values[site.unreachable(times)] = np.nan
    (out / "readings.csv").write_text(readings_csv(site, times, values), encoding="utf-8")
    write_labels(site, out / "labels.csv", until=days * 86400.0)
    write_site_file(site, out / "site.toml", host=host, modbus_port=modbus_port,
                    opcua_port=opcua_port, iec104_port=iec104_port)
