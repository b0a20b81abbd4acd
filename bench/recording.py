"""Recording reader and writer throughput (gateway/storage/recording.py) on a ~100 MB wide CSV.

    python -m bench.recording [--rows 600000] [--tags 25]

Writes a synthetic recording (minute rows, values with 4 significant digits as simulators
export them), with and without 5 % empty cells, plain and gzipped, and reads each back.
CPU time is printed beside wall time: on a shared machine it is the steadier figure.
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from anomaly.core.batch import Batch
from gateway.storage.recording import RecordingReader, write_recording

T0 = 1767571200 * 10**9


def synthetic(rows: int, tags: int, empty: float, seed: int = 1) -> Batch:
    rng = np.random.default_rng(seed)
    values = np.round(rng.normal(40, 10, (rows, tags)), 2)
    keep = rng.random((rows, tags)) >= empty
    ts = np.broadcast_to((T0 + np.arange(rows, dtype=np.int64) * 60 * 10**9)[:, None],
                         values.shape)
    point = np.broadcast_to(np.arange(tags, dtype=np.int32)[None, :], values.shape)
    return Batch.of(source_ts=ts[keep], point=point[keep], value=values[keep], quality=0)


def read(path: Path, tags: list[str]) -> tuple[float, float, int, int]:
    """(wall s, CPU s, rows, readings)"""
    began, cpu = time.perf_counter(), time.process_time()
    with RecordingReader(path, tags) as reader:
        readings = sum(len(b) for b in reader)
    return (time.perf_counter() - began, time.process_time() - cpu, reader.stats.rows,
            readings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=600_000)
    parser.add_argument("--tags", type=int, default=25)
    args = parser.parse_args()
    tags = [f"zone{i % 5}.tag{i}.flow" for i in range(args.tags)]
    with tempfile.TemporaryDirectory() as tmp:
        for empty in (0.0, 0.05):
            path = Path(tmp) / f"readings-{empty}.csv"
            data = synthetic(args.rows, args.tags, empty)
            began, cpu = time.perf_counter(), time.process_time()
            write_recording(path, tags, [data])
            wrote, cpu = time.perf_counter() - began, time.process_time() - cpu
            size = path.stat().st_size
            print(f"write {args.rows:,} rows x {args.tags} tags ({size / 1e6:.0f} MB, "
                  f"{empty:.0%} empty cells): {wrote:.1f} s wall, {cpu:.1f} s CPU, "
                  f"{args.rows / cpu:,.0f} rows per CPU s", flush=True)
            gz = path.with_suffix(".csv.gz")
            with path.open("rb") as src, gzip.open(gz, "wb", compresslevel=6) as dst:
                shutil.copyfileobj(src, dst)
            for source in (path, gz):
                wall, cpu, rows, readings = read(source, tags)
                print(f"  read {source.name}: {wall:.2f} s wall, {cpu:.2f} s CPU: "
                      f"{rows / cpu:,.0f} rows and {rows * args.tags / cpu:,.0f} tag-samples "
                      f"per CPU s ({readings:,} readings)", flush=True)


if __name__ == "__main__":
    main()
