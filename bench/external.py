"""Public benchmark data (../shared/benchmarks) replayed through `scadawatch replay`.

The data is not the project's and stays where it is: `benchmarks_dir()` finds it from
`SCADAWATCH_BENCHMARKS` or as `shared/benchmarks` beside the project root or any folder above
it (the main checkout's `../shared/benchmarks`, a worktree's `../../shared/benchmarks`).
`replay()` writes what a utility engineer would hand the product (a site file and a wide CSV
of readings) and runs the `scadawatch replay` command on it, in this process (the command's
own code path, without a Python start per series), returning the alarms it wrote.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import numpy as np

ENV = "SCADAWATCH_BENCHMARKS"
T = TypeVar("T")
R = TypeVar("R")
ROOT = Path(__file__).resolve().parent.parent


def benchmarks_dir() -> Path | None:
    """Where the shared benchmark data is, or None when this machine has none."""
    if env := os.environ.get(ENV):
        return Path(env) if Path(env).is_dir() else None
    for folder in ROOT.parents:
        candidate = folder / "shared" / "benchmarks"
        if candidate.is_dir():
            return candidate
    return None


def run_options(p: argparse.ArgumentParser, what: str) -> None:
    """The options bench.nab and bench.skab share."""
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                   help="processes (default: 2 at most)")
    p.add_argument("--no-baselines", action="store_true", help="the engine only")
    p.add_argument("--verbose", action="store_true", help=f"every alarm of every {what}")


def each(fn: Callable[[T, bool], R], items: Sequence[T], baselines: bool, jobs: int) -> list[R]:
    """fn(item, baselines) for every item, in `jobs` processes."""
    if jobs <= 1:
        return [fn(item, baselines) for item in items]
    with ProcessPoolExecutor(jobs) as pool:
        return list(pool.map(fn, items, [baselines] * len(items)))


def missing_reason() -> str:
    return (f"no benchmark data: set {ENV} or put it in ../shared/benchmarks beside the "
            "project (see bench/nab.py and bench/skab.py)")


@dataclass(frozen=True)
class Series:
    """Readings of one recording as a table: `times` (ns, UTC) and `values` (rows, tags)."""

    tags: tuple[str, ...]
    times: np.ndarray
    values: np.ndarray

    def step_s(self) -> float:
        return float(np.median(np.diff(self.times))) / 1e9 if len(self.times) > 1 else 0.0


@dataclass(frozen=True)
class PointSpec:
    """What the site file says of a point (the rest are the site file's defaults)."""

    tag: str
    kind: str = "other"
    unit: str = ""
    zone: str | None = None


@dataclass(frozen=True)
class Raised:
    """An alarm as the replay wrote it: kind, tag, start and end (ns; None: still open)."""

    kind: str
    tag: str | None
    start_ns: int
    end_ns: int | None
    message: str


def naive_utc_ns(stamps: Sequence[str]) -> np.ndarray:
    """`YYYY-MM-DD HH:MM:SS` stamps without a zone (read as UTC) as int64 ns."""
    return np.array(stamps, dtype="datetime64[ns]").astype(np.int64)


def site_text(name: str, points: Sequence[PointSpec], data_dir: Path,
              anomaly: Mapping[str, object] | None = None) -> str:
    """A site file of `points` (`anomaly`: its [anomaly] section's keys, JSON-typed)."""
    lines = ["[site]", f"name = {json.dumps(name)}", f"data_dir = {json.dumps(str(data_dir))}"]
    if anomaly:
        lines += ["", "[anomaly]", *(f"{k} = {_toml(v)}" for k, v in anomaly.items())]
    for p in points:
        lines += ["", "[[points]]", f"tag = {json.dumps(p.tag)}", f"kind = {json.dumps(p.kind)}",
                  f"unit = {json.dumps(p.unit)}"]
        if p.zone:
            lines.append(f"zone = {json.dumps(p.zone)}")
    return "\n".join(lines) + "\n"


def _toml(value: object) -> str:
    """A TOML value: JSON's form for strings, numbers and lists; inline tables for dicts."""
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


def readings_text(series: Series) -> str:
    stamps = np.datetime_as_string(series.times.astype("datetime64[ns]"), unit="s")
    rows = [",".join([f"{t}Z", *("" if np.isnan(v) else repr(v) for v in row)])
            for t, row in zip(stamps.tolist(), series.values.tolist(), strict=True)]
    return "\n".join([",".join(["timestamp", *series.tags]), *rows]) + "\n"


def replay(name: str, points: Sequence[PointSpec], series: Series,
           anomaly: Mapping[str, object] | None = None) -> list[Raised]:
    """Alarms of `scadawatch replay` over `series` on a site of `points` (one per column),
    its [anomaly] section `anomaly`."""
    from scadawatch.cli import main as cli

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        site, readings, out = folder / "site.toml", folder / "readings.csv", folder / "out.jsonl"
        site.write_text(site_text(name, points, folder / "data", anomaly), encoding="utf-8")
        readings.write_text(readings_text(series), encoding="utf-8")
        with contextlib.redirect_stdout(io.StringIO()) as said, \
                contextlib.redirect_stderr(said):
            code = cli(["replay", "--config", str(site), "--input", str(readings),
                        "--out", str(out)])
        if code != 0:
            raise RuntimeError(f"scadawatch replay of {name} failed ({code}): "
                               f"{said.getvalue()}")
        return [_raised(json.loads(line)) for line in out.read_text("utf-8").splitlines()]


def _raised(alarm: dict) -> Raised:
    def ns(text: str | None) -> int | None:
        if text is None:
            return None
        return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1e9)

    start = ns(alarm["start"])
    assert start is not None
    return Raised(alarm["kind"], alarm["tag"], start, ns(alarm["end"]), alarm["message"])


def flagged_rows(times: np.ndarray, alarms: Sequence[Raised], step_ns: int) -> np.ndarray:
    """Per row: whether an alarm was active on it. An alarm raised at the end of a tick was
    decided on the reading(s) of that tick, so it flags rows from `start - step` to the row
    before `end - step` (to the last row while still open)."""
    flags = np.zeros(len(times), dtype=bool)
    for a in alarms:
        first = np.searchsorted(times, a.start_ns - step_ns)
        last = len(times) if a.end_ns is None else np.searchsorted(times, a.end_ns - step_ns)
        flags[first:max(last, first + 1)] = True
    return flags


def raise_rows(times: np.ndarray, alarms: Sequence[Raised], step_ns: int) -> np.ndarray:
    """Per row: whether an alarm was raised on it (the row whose tick raised it)."""
    flags = np.zeros(len(times), dtype=bool)
    for a in alarms:
        row = min(int(np.searchsorted(times, a.start_ns - step_ns)), len(times) - 1)
        flags[row] = True
    return flags
