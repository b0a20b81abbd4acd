"""Wall time of week-long exports: water every 5 min, grid every 15 min (goal: < 60 s each).

    python -m bench.export

CPU time is printed beside it: on a shared machine it is the steadier figure.
"""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from simulators.export import export
from simulators.site import build_site

RUNS = (("water", 300.0), ("grid", 900.0))
DAYS = 7.0
START = datetime(2026, 1, 5, tzinfo=UTC)


def main() -> None:
    for name, step in RUNS:
        with tempfile.TemporaryDirectory() as out:
            began, cpu = time.perf_counter(), time.process_time()
            site = build_site(name, "normal", seed=1, start=START, step=step)
            built = time.perf_counter()
            export(site, Path(out), days=DAYS, step=step)
            done, cpu = time.perf_counter(), time.process_time() - cpu
            size = (Path(out) / "readings.csv").stat().st_size
        rows = int(DAYS * 86400 / step)
        print(f"{name}: {DAYS:g} days every {step / 60:g} min, {rows} rows x {len(site.tags)} "
              f"tags ({size / 1e6:.1f} MB): {done - began:.1f} s wall, {cpu:.1f} s CPU "
              f"(build {built - began:.1f} s, export {done - built:.1f} s wall)", flush=True)


if __name__ == "__main__":
    main()
