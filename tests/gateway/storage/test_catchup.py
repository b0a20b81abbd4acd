"""The InfluxDB sink's durable progress: which spool records it has stored
(gateway.storage.influxdb.catchup).

The lanes themselves run against a real InfluxDB in test_influx.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.storage.influxdb.catchup import Progress


@pytest.mark.parametrize(("adds", "low", "ranges"), [
    ([(11, 15)], 15, []),
    ([(20, 25)], 10, [[20, 25]]),
    ([(20, 25), (11, 19)], 25, []),  # the backlog lane reaches the live lane's range
    ([(20, 25), (30, 31), (26, 29)], 10, [[20, 31]]),
    ([(20, 25), (40, 41)], 10, [[20, 25], [40, 41]]),  # the live lane jumped ahead
    ([(20, 25), (5, 8)], 10, [[20, 25]]),  # stored again (a re-send): nothing changes
    ([(20, 25), (22, 40)], 10, [[20, 40]]),
])
def test_progress_merges_what_was_stored(tmp_path: Path, adds: list[tuple[int, int]],
                                         low: int, ranges: list[list[int]]) -> None:
    progress = Progress(tmp_path / "p.json", 10)
    for a, b in adds:
        progress.add(a, b)
    assert (progress.low, progress.ranges) == (low, ranges)
    progress.save()
    loaded = Progress.load(tmp_path / "p.json", acked=0)
    assert (loaded.low, loaded.ranges) == (low, ranges)


@pytest.mark.parametrize(("content", "acked", "low", "ranges"), [
    (None, 7, 7, []),  # a sink that never saved: the spool's ack
    ('{"low": 10, "ranges": [[20, 25]]}', 12, 12, [[20, 25]]),  # acked after the save
    ('{"low": 10, "ranges": [[20, 25]]}', 22, 25, []),
    ("{torn", 7, 7, []),  # unreadable: re-sending from the ack is harmless
])
def test_progress_never_falls_below_the_spool_ack(tmp_path: Path, content: str | None,
                                                  acked: int, low: int,
                                                  ranges: list[list[int]]) -> None:
    path = tmp_path / "p.json"
    if content is not None:
        path.write_text(content)
    loaded = Progress.load(path, acked)
    assert (loaded.low, loaded.ranges) == (low, ranges)
