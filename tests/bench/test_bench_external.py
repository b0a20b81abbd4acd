"""The public benchmarks' scorers (bench/nab.py: NAB's standard profile; bench/skab.py: SKAB's
F1, FAR, MAR and changepoint NAB) on hand-made cases with known scores, and one series of each
replayed through `scadawatch replay` when ../shared/benchmarks is on this machine."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench import nab, skab
from bench.external import benchmarks_dir, missing_reason

S = 10**9


def rows(n: int, *hits: int) -> np.ndarray:
    out = np.zeros(n, dtype=bool)
    out[list(hits)] = True
    return out


# 1,000 rows: the first 150 are probationary; windows at 300-399 and 700-799.
WINDOWS = [(300, 399), (700, 799)]
EDGE = 2 / (1 + math.exp(5.0 * (-1 / 100))) - 1  # a window's last row: x = -1/width


@pytest.mark.parametrize(("hits", "raw", "tp", "fp"), [
    ((), -2.0, 0, 0),  # the null detector
    ((300, 700), 2.0, 2, 0),  # the perfect one: each window's first row
    ((300, 310, 700), 2.0, 2, 0),  # only a window's first detection counts
    ((100, 300, 700), 2.0, 2, 0),  # a probationary row is not scored
    ((200, 300, 700), 2.0 - 0.11, 2, 1),  # before any window: a full false positive
    ((399, 799), 2 * EDGE / (2 / (1 + math.exp(-5.0)) - 1), 2, 0),  # at the last rows
    # right after a window a false positive costs next to nothing; a missed window 1
    ((300, 400), 0.11 * (2 / (1 + math.exp(5.0 / 99)) - 1), 1, 1),
])
def test_nab_standard_profile(hits: tuple[int, ...], raw: float, tp: int, fp: int) -> None:
    s = nab.score_file(1000, WINDOWS, rows(1000, *hits))
    assert (s.tp, s.fp, s.windows) == (tp, fp, 2)
    assert s.raw == pytest.approx(raw, abs=1e-9)
    assert s.normalised == pytest.approx(100 * (raw + 2) / 4, abs=0.1)


def _experiment(anomaly: slice, changepoints: list[int]) -> skab.Experiment:
    n = 1000
    a = np.zeros(n, dtype=bool)
    a[anomaly] = True
    return skab.Experiment("valve1/x.csv", np.arange(n, dtype=np.int64) * S, np.zeros((n, 8)),
                           a, rows(n, *changepoints))


def test_skab_per_row_and_changepoint_scores() -> None:
    e = _experiment(slice(600, 800), [600, 800])
    perfect = skab.score([e], [e.anomaly])
    assert (perfect.f1, perfect.far, perfect.mar) == (1.0, 0.0, 0.0)
    assert perfect.nab["standard"] == pytest.approx(100.0)
    every = skab.score([e], [np.ones(1000, dtype=bool)])
    assert every.f1 == pytest.approx(200 / (200 + 400 / 2))  # 400 false test rows
    assert every.far == 100.0 and every.mar == 0.0
    late = np.zeros(1000, dtype=bool)
    late[630:800] = True  # found 30 s into its 60 s window, cleared at its end
    s = skab.score([e], [late])
    assert s.f1 == pytest.approx(170 / (170 + 30 / 2))
    assert 0 < s.nab["standard"] < 100
    # what the first 400 rows (SKAB's training part) hold is not scored
    early = e.anomaly | rows(1000, *range(10, 50))
    assert skab.score([e], [early]).far == 0.0


@pytest.fixture(scope="module")
def data() -> Path:
    root = benchmarks_dir()
    if root is None:
        pytest.skip(missing_reason())
    return root


def bench(*args: str) -> str:
    run = subprocess.run([sys.executable, "-m", *args, "--no-baselines", "--jobs", "1",
                          "--verbose"], capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parents[2])
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout


def test_nab_series_through_replay(data: Path) -> None:
    """NAB's day without its daily jump: found within its window, as a broken daily pattern."""
    out = bench("bench.nab", "--file", "artificialWithAnomaly/art_daily_nojump.csv")
    assert "TP 1 FN 0" in out
    assert "at this time of day" in out


def test_skab_experiment_through_replay(data: Path) -> None:
    """The valve closed at the pump's inlet: the flow drop is found, and the table says how
    flagging every row would score."""
    out = bench("bench.skab", "--file", "valve1/1.csv")
    assert "flow_rms: level down" in out
    engine = next(line for line in out.splitlines() if line.strip().startswith("all (1)"))
    assert float(engine.split()[4]) >= 0.6  # F1
