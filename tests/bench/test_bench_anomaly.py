"""`python -m bench.anomaly`: the quick run prints its tables; tuning seeds are refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("river")  # the baselines and the zone detector are river's


def bench(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bench.anomaly", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=Path(__file__).resolve().parents[2])


@pytest.mark.slow
def test_quick_run_prints_scores_and_rates(tmp_path: Path) -> None:
    run = bench("--quick", "--cache", str(tmp_path), timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    out = run.stdout
    assert "water sensor-faults" in out
    for row in ("engine", "gauss/tag", "hst/zone", "Replay throughput",
                "ratio engine, water / river"):
        assert row in out
    assert "KIND-AGNOSTICALLY" in out  # the baselines' scoring is said


@pytest.mark.parametrize("seeds", ["2", "101,3", "x"])
def test_tuning_or_bad_seeds_are_refused(seeds: str) -> None:
    run = bench("--seeds", seeds, timeout=60)
    assert run.returncode == 2
    assert "--seeds" in run.stderr
