"""`bench.drift_walks`: the walk added to a clean recording is the simulator's drift (1.5 m a
day from its start, on its logger only, gone after 48 h), and the walks' starts fall where a
faults recording's may (after day 2, the walk and its grace inside the recording)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench import drift_walks
from bench.drift_walks import DAY, FIRST, GRACE, HOUR, WALK, starts, walked

STEP = 900 * 10**9
TIMES = np.arange(10 * 96) * STEP  # ten days of 15-minute readings
VALUES = np.full((TIMES.size, 3), 50.0)
RATE = 1.5 / 24


@pytest.mark.parametrize(("at", "sign", "expected"), [
    (-STEP, 1.0, 0.0),  # before the walk
    (0, 1.0, 0.0),  # its first reading: nothing yet
    (24 * HOUR, 1.0, 1.5),  # a day in
    (24 * HOUR, -1.0, -1.5),  # walking down
    (WALK - STEP, 1.0, 3.0 - RATE / 4),  # its last reading
    (WALK, 1.0, 0.0),  # over: the logger reads true again
])
def test_the_walk_is_the_simulators_drift(at: int, sign: float, expected: float) -> None:
    start = 3 * DAY
    out = walked(TIMES, VALUES, 1, start, sign * RATE)
    row = int(np.searchsorted(TIMES, start + at))
    assert out[row, 1] - 50.0 == pytest.approx(expected)
    assert np.all(out[:, [0, 2]] == 50.0)  # the neighbours are untouched


@pytest.mark.parametrize("column", [0, 1, 2])
@pytest.mark.parametrize("count", [1, 4])
def test_walks_start_after_day_two_and_end_inside(column: int, count: int) -> None:
    s = np.array(starts(TIMES, column, count))
    assert len(s) == count
    assert np.all(s >= TIMES[0] + FIRST)
    assert np.all(s + WALK + GRACE <= TIMES[-1])
    assert np.all(s % (60 * 10**9) == 0)  # whole minutes, as the simulator's faults



@pytest.mark.parametrize(("network", "seeds", "heading"), [
    ("ky10", [151, 152], "ky10 (held out, only evaluated; clean seeds 151-152)"),
    ("anytown", [151, 152], "anytown (held out, only evaluated; clean seeds 151-152)"),
    ("net1", [52, 53, 54, 55, 56], "net1 (tuning; clean seeds 52-56)"),
])
def test_each_network_walks_its_roles_recordings(
        network: str, seeds: list[int], heading: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Held-out networks are walked on their held-out clean recordings (bench.networks'
    151-152) and said to be only evaluated; tuning networks on tuning seeds."""
    walked_seeds: list[int] = []
    printed: list[str] = []
    monkeypatch.setattr(drift_walks, "exported",
                        lambda cache, name, kind, seed: tmp_path / f"{name}-{kind}-s{seed}")
    monkeypatch.setattr(drift_walks, "run_recording",
                        lambda d, rate, count, walks: walked_seeds.append(
                            int(d.name.rsplit("-s", 1)[1])))
    monkeypatch.setattr(drift_walks, "print_walks", lambda name, walks: printed.append(name))
    drift_walks.main(["--networks", network, "--cache", str(tmp_path)])
    assert walked_seeds == seeds
    assert printed == [heading]


@pytest.mark.parametrize("argv", [
    ["--networks", "ky10", "--held-out-seeds", "52-53"],  # a held-out network on tuning seeds
    ["--networks", "net1", "--seeds", "150-151"],  # tuning seeds are below 101
    ["--networks", "net2"],  # left out (a fixed injection), no recording here
])
def test_seeds_outside_a_roles_range_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        drift_walks.main(argv)
