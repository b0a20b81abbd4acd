"""Per-tick cost of each default detector, alone, on a small and a wide site.

Synthetic sites of water-like zones (flows, pressures, a level, a pump status per ten points,
devices of ten points): every point has a noisy reading in every tick, or (`sparse`) one tick
in five has readings, as a 5-minute recording replayed in 1-minute ticks. The `limits`
detector, the simplest, is the yardstick: the ratio column divides by its cost, which takes
out most of the machine's speed and load.

    python -m bench.detector_cost [--points 25,2000] [--ticks 300]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from anomaly.core.points import PointInfo, PointTable
from anomaly.core.ticks import Tick
from anomaly.engine import EngineSettings, default_detectors

S = 10**9
KINDS = ("flow", "pressure", "pressure", "pressure", "level", "status", "flow", "pressure",
         "current", "voltage")
# Flows in L/s, so that the leak detector judges the zones (it skips a zone in unknown units).
UNITS = {"flow": "L/s", "pressure": "m", "level": "m", "status": "", "current": "A",
         "voltage": "kV"}


def site(n: int) -> PointTable:
    return PointTable([PointInfo(f"z{i // 50}.p{i}", KINDS[i % 10], UNITS[KINDS[i % 10]],
                                 zone=f"z{i // 50}", role="inflow" if i % 50 == 0 else None,
                                 lo=0.0, hi=100.0, device=f"rtu{i // 10}")
                       for i in range(n)])


def ticks(n: int, count: int, sparse: bool) -> list[Tick]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(count):
        has = not sparse or i % 5 == 0
        v = np.round(50 + 5 * np.sin(i / 200) + rng.normal(0, 0.5, n), 2)
        v = np.where(has, v, np.nan)
        c = np.full(n, int(has), dtype=np.int64)
        ts = np.full(n, i * 60 * S if has else -1, dtype=np.int64)
        out.append(Tick(i * 60 * S, (i + 1) * 60 * S, c, v, v, v, v, ts, 0 * c))
    return out


def per_tick_us(detector: object, sequence: list[Tick]) -> float:
    """Microseconds per tick over the second half (the first half warms the detector up)."""
    half = len(sequence) // 2
    for t in sequence[:half]:
        detector.update(t)  # type: ignore[attr-defined]
    began = time.perf_counter()
    for t in sequence[half:]:
        detector.update(t)  # type: ignore[attr-defined]
    return (time.perf_counter() - began) / (len(sequence) - half) * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--points", default="25,2000")
    p.add_argument("--ticks", type=int, default=300)
    args = p.parse_args()
    settings = EngineSettings()
    print(f"{'points':>6} {'input':>7} {'detector':<12} {'us/tick':>9} {'ns/point':>9} "
          f"{'x limits':>9}")
    for n in (int(x) for x in args.points.split(",")):
        for sparse in (False, True):
            sequence = ticks(n, args.ticks, sparse)
            rows = [(d.name, per_tick_us(d, sequence))
                    for d in default_detectors(site(n), settings)]
            yardstick = dict(rows).get("limits")
            for name, us in rows:
                ratio = f"{us / yardstick:9.1f}" if yardstick else f"{'-':>9}"
                print(f"{n:6d} {'sparse' if sparse else 'dense':>7} {name:<12} {us:9.1f} "
                      f"{us * 1e3 / n:9.1f} {ratio}")


if __name__ == "__main__":
    main()
