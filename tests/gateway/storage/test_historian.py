"""The embedded historian: what a store keeps, and what latest/history/buckets give back,
before and after compaction, across reopen and from another process."""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import subprocess
import sys
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from support.small_fs import SmallFs

from anomaly.core.batch import Batch, Quality
from gateway.storage.historian import (
    PART_READINGS,
    EmbeddedHistorian,
    HistorianError,
    store_readings,
)

TAGS = ["dma1.flow", "dma1.pressure", "res1.level"]
READINGS = 3000  # per tag
SPAN = 1_000_000  # ns


@pytest.fixture
def open_historian(tmp_path: Path) -> Iterator[Callable[..., EmbeddedHistorian]]:
    """Open (or reopen) the historian at `tmp_path/h.sqlite`; closed after the test."""
    opened: list[EmbeddedHistorian] = []

    def open_(tags: list[str] = TAGS, readonly: bool = False) -> EmbeddedHistorian:
        h = EmbeddedHistorian(tmp_path / "h.sqlite", tags, readonly=readonly)
        opened.append(h)
        return h

    yield open_
    for h in reversed(opened):
        h.close()


def random_readings(seed: int) -> Batch:
    """READINGS per tag at distinct random times, in shuffled arrival order, ~10% bad."""
    rng = np.random.default_rng(seed)
    parts = []
    for point in range(len(TAGS)):
        ts = np.sort(rng.choice(SPAN, READINGS, replace=False))
        quality = rng.choice([Quality.GOOD, Quality.UNCERTAIN, Quality.BAD], READINGS,
                             p=[0.8, 0.1, 0.1])
        value = np.where(quality == Quality.BAD, np.nan, rng.normal(50, 10, READINGS))
        parts.append(Batch.of(source_ts=ts, gateway_ts=ts + 7, point=np.full(READINGS, point),
                              value=value,
                              quality=quality, cause=(quality == Quality.BAD) * 3))
    readings = Batch.concat(parts)
    return readings.take(rng.permutation(len(readings)))


def compact_fully(h: EmbeddedHistorian) -> None:
    for _ in range(10_000):
        if not h.compact(full=True):
            return
    raise AssertionError("compaction never finished")


# Where the readings are when queried: as stored; moved into per-tag chunks at the end; or
# compacted after every store, so that small chunks overlapping in time get merged.
STATES = ["fresh", "compacted", "merged"]


def store_in_pieces(h: EmbeddedHistorian, readings: Batch, seed: int, state: str = "fresh"
                    ) -> int:
    """Store `readings` in random-sized spool entries, several per store; return last seq."""
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.choice(np.arange(1, len(readings)), 40, replace=False))
    entries = [(i + 1, readings.take(np.arange(a, b)))
               for i, (a, b) in enumerate(zip([0, *cuts], [*cuts, len(readings)], strict=True))]
    for i in range(0, len(entries), 3):
        h.store(entries[i : i + 3])
        if state == "merged":
            compact_fully(h)
    if state == "compacted":
        compact_fully(h)
    return entries[-1][0]


def of_tag(readings: Batch, point: int) -> Batch:
    mine = readings.take(readings.point == point)
    return mine.take(np.argsort(mine.source_ts, kind="stable"))


def reference_buckets(b: Batch, start: int, end: int, width: int) -> list[tuple]:
    """Pure-Python buckets: (start, count, mean, min, max, first, last) over good+uncertain."""
    groups: dict[int, list[float]] = {}
    for t, v, q in zip(b.source_ts.tolist(), b.value.tolist(), b.quality.tolist(), strict=True):
        if start <= t < end and q != Quality.BAD:
            groups.setdefault(t // width, []).append(v)
    return [(k * width, len(vs), math.fsum(vs) / len(vs), min(vs), max(vs), vs[0], vs[-1])
            for k, vs in sorted(groups.items())]


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("width", [1, 7, 1000, 65_536, 10 * SPAN])
@pytest.mark.parametrize(("start", "end"), [(0, SPAN), (123_457, 876_543), (500, 501)])
def test_buckets_equal_a_pure_python_reference(open_historian, state, width, start,
                                               end) -> None:
    h = open_historian()
    readings = random_readings(seed=width)
    store_in_pieces(h, readings, seed=width, state=state)
    for point, tag in enumerate(TAGS):
        got = h.buckets(tag, start, end, width)
        want = reference_buckets(of_tag(readings, point), start, end, width)
        assert len(got) == len(want)
        if not want:
            continue
        start_, count, mean, min_, max_, first, last = (np.array(c) for c in zip(*want,
                                                                                  strict=True))
        np.testing.assert_array_equal(got.start, start_)
        np.testing.assert_array_equal(got.count, count)
        np.testing.assert_allclose(got.mean, mean, rtol=1e-12)
        for name, col in (("min", min_), ("max", max_), ("first", first), ("last", last)):
            np.testing.assert_array_equal(getattr(got, name), col, err_msg=name)


@pytest.mark.parametrize("state", STATES)
def test_history_returns_raw_readings_in_range_in_time_order(open_historian, state) -> None:
    h = open_historian()
    readings = random_readings(seed=1)
    store_in_pieces(h, readings, seed=1, state=state)
    for point, tag in enumerate(TAGS):
        mine = of_tag(readings, point)
        for start, end, limit in ((0, SPAN, None), (int(mine.source_ts[10]),
                                   int(mine.source_ts[20]), None), (0, SPAN, 5),
                                  (100_000, SPAN, 1000)):
            want = mine.take((mine.source_ts >= start) & (mine.source_ts < end))
            want = want.take(np.arange(min(len(want), limit or len(want))))
            got = h.history(tag, start, end, limit=limit)
            for name in Batch.DTYPES:
                np.testing.assert_array_equal(getattr(got, name), getattr(want, name),
                                              err_msg=name)


def test_automatic_compaction_keeps_every_reading(open_historian) -> None:
    h = open_historian()
    # Enough stores that the first group of tags is moved into chunks as they go.
    readings = Batch.concat([random_readings(seed) for seed in range(4)])
    for seq, i in enumerate(range(0, len(readings), 30), start=1):
        h.store([(seq, readings.take(np.arange(i, min(i + 30, len(readings)))))])
    for point, tag in enumerate(TAGS):
        got = h.history(tag, 0, SPAN)
        assert len(got) == 4 * READINGS
        np.testing.assert_array_equal(np.sort(got.value), np.sort(of_tag(readings, point).value))


def test_compaction_leaves_a_tag_in_few_chunks(open_historian, tmp_path) -> None:
    # What keeps a query over millions of readings fast: few rows to read per tag.
    h = open_historian()
    for seq in range(1, 201):
        ts = seq * 100 + np.arange(100)
        h.store([(seq, Batch.of(source_ts=ts, point=np.zeros(100), value=ts, quality=0))])
    compact_fully(h)
    db = sqlite3.connect(tmp_path / "h.sqlite")
    rows = db.execute("SELECT typeof(n), n FROM chunks").fetchall()
    db.close()
    assert len(rows) <= 5  # 20,000 readings, up to 4,096 a chunk
    assert {t for t, _ in rows} == {"integer"} and sum(n for _, n in rows) == 20_000
    assert len(h.history(TAGS[0], 0, 10**9)) == 20_000


def test_latest_is_the_newest_reading_of_each_tag(open_historian) -> None:
    h = open_historian()
    h.store([(1, Batch.of(source_ts=[100, 200, 150], point=[0, 0, 1], value=[1.0, 2.0, 3.0],
                          quality=Quality.GOOD))])
    # Late data for tag 0 must not hide its newer reading; tag 1's newest is a failed read.
    h.store([(2, Batch.of(source_ts=[50, 300], point=[0, 1], value=[9.0, np.nan],
                          quality=[Quality.GOOD, Quality.BAD], cause=[0, 4]))])
    latest = h.latest()
    assert latest.point.tolist() == [0, 1]  # res1.level has no reading yet
    assert latest.source_ts.tolist() == [200, 300]
    assert latest.value[0] == 2.0 and np.isnan(latest.value[1])
    assert latest.quality.tolist() == [Quality.GOOD, Quality.BAD]
    assert latest.cause.tolist() == [0, 4]
    subset = h.latest(["dma1.pressure", "dma1.flow"])
    assert subset.point.tolist() == [1, 0] and subset.source_ts.tolist() == [300, 200]
    with pytest.raises(KeyError, match="nope"):
        h.latest(["nope"])


def test_store_is_exactly_once_by_spool_sequence(open_historian) -> None:
    h = open_historian()
    batch = Batch.of(source_ts=[1, 2], point=[0, 1], value=[1.0, 2.0], quality=0)
    h.store([(5, batch), (6, batch)])
    h.store([(6, batch), (7, batch)])  # 6 again, as after a crash between store and ack
    assert h.cursor() == 7
    h.close()
    h = open_historian()
    assert h.cursor() == 7
    assert len(h.history("dma1.flow", 0, 10)) == 3


def test_tag_ids_survive_a_change_of_the_point_list(open_historian) -> None:
    h = open_historian(["a", "b", "c"])
    h.store([(1, Batch.of(source_ts=[10, 20, 30], point=[0, 1, 2], value=[1.0, 2.0, 3.0],
                          quality=0))])
    h.close()
    h = open_historian(["c", "x", "a"])  # b removed, x added, order changed
    h.store([(2, Batch.of(source_ts=[40], point=[1], value=[4.0], quality=0))])
    assert h.history("a", 0, 100).value.tolist() == [1.0]
    assert h.history("a", 0, 100).point.tolist() == [2]
    assert h.history("x", 0, 100).value.tolist() == [4.0]
    assert h.history("b", 0, 100).point.tolist() == [-1]  # stored, no longer configured
    latest = h.latest()
    assert latest.point.tolist() == [0, 1, 2]
    assert latest.value.tolist() == [3.0, 4.0, 1.0]
    with pytest.raises(KeyError):
        h.history("never", 0, 100)


def test_readings_of_unknown_points_are_logged_and_the_rest_stored(open_historian,
                                                                   caplog) -> None:
    h = open_historian()
    with caplog.at_level(logging.ERROR, logger="gateway.storage.historian"):
        h.store([(1, Batch.of(source_ts=[1, 2], point=[0, 99], value=[1.0, 2.0], quality=0))])
    assert "event=historian_unknown_point readings=1" in caplog.text
    assert h.history("dma1.flow", 0, 10).value.tolist() == [1.0]
    assert h.cursor() == 1


READER = """
import json, sys
from pathlib import Path
from gateway.storage.historian import EmbeddedHistorian
h = EmbeddedHistorian(Path(sys.argv[1]), json.loads(sys.argv[2]), readonly=True)
latest = h.latest()
print(json.dumps({
    "cursor": h.cursor(),
    "latest": [latest.point.tolist(), latest.value.tolist()],
    "history": [len(h.history(t, 0, 2**62)) for t in h.tags],
    "buckets": [h.buckets(t, 0, 2**62, 100_000).count.tolist() for t in h.tags],
}))
"""


def test_a_reader_in_another_process_sees_the_writers_data(open_historian, tmp_path) -> None:
    h = open_historian()
    readings = random_readings(seed=5)
    last = store_in_pieces(h, readings, seed=5)
    tags = list(reversed(TAGS))
    out = subprocess.run([sys.executable, "-c", READER, str(tmp_path / "h.sqlite"),
                          json.dumps(tags)], capture_output=True, text=True, timeout=60,
                         check=True).stdout
    seen = json.loads(out)
    assert seen["cursor"] == last
    latest = h.latest()
    assert seen["latest"] == [[0, 1, 2], latest.value[::-1].tolist()]
    assert seen["history"] == [READINGS] * 3
    for tag, counts in zip(tags, seen["buckets"], strict=True):
        assert counts == h.buckets(tag, 0, 2**62, 100_000).count.tolist()


def test_readonly_open_of_a_missing_file_names_it(tmp_path) -> None:
    with pytest.raises(HistorianError, match=r"missing\.sqlite"):
        EmbeddedHistorian(tmp_path / "missing.sqlite", TAGS, readonly=True)


def test_bucket_width_must_be_positive(open_historian) -> None:
    with pytest.raises(ValueError, match="width"):
        open_historian().buckets("dma1.flow", 0, 10, 0)


def test_a_full_disk_fails_a_store_saying_so_and_leaves_latest_as_stored(
        small_fs: SmallFs) -> None:
    """The commit fails on a real full filesystem: the error names the file and the disk
    (SQLite rolled back by itself; a second rollback must not hide why), and the failed
    reading is not the tag's latest when the next store rewrites latest from memory."""
    h = EmbeddedHistorian(small_fs.root / "h.sqlite", TAGS)
    try:
        h.store([(1, Batch.of(source_ts=[1, 1, 1], point=[0, 1, 2], value=[1.0, 1.0, 1.0],
                              quality=Quality.GOOD))])
        small_fs.fill()
        with pytest.raises(HistorianError) as failed:
            h.store([(2, Batch.of(source_ts=[2], point=[0], value=[2.0], quality=0))])
        assert str(failed.value).startswith(f"{h.path}: ")
        assert "database or disk is full" in str(failed.value), failed.value
        assert h.cursor() == 1
        small_fs.empty()
        h.store([(3, Batch.of(source_ts=[3], point=[1], value=[3.0], quality=0))])
        reader = EmbeddedHistorian(h.path, TAGS, readonly=True)
        latest = reader.latest()
        reader.close()
    finally:
        h.close()
    assert dict(zip(latest.point.tolist(), zip(latest.source_ts.tolist(), latest.value.tolist(),
                                                 strict=True), strict=True)) == {
        0: (1, 1.0), 1: (3, 3.0), 2: (1, 1.0)}


@pytest.mark.parametrize("shift", [10, 6])
def test_a_file_with_the_earlier_latest_layout_keeps_its_latest_values(
        tmp_path: Path, shift: int) -> None:
    """Files written before kept `latest` in rows of 1,024 tag ids (no `latest_shift`), then
    of 64: the writer converts them on opening, and readers read either."""
    path = tmp_path / "h.sqlite"
    h = EmbeddedHistorian(path, TAGS)
    h.store([(1, Batch.of(source_ts=[5, 6, 7], point=[0, 1, 2], value=[1.0, 2.0, 3.0],
                          quality=0))])
    h.close()
    db = sqlite3.connect(path)  # as an earlier version left it: one row for ids 0..2**shift-1
    legacy = np.zeros(1 << shift, [("source_ts", "i8"), ("value", "f8"), ("server_ts", "i8"),
                             ("gateway_ts", "i8"), ("cause", "u4"), ("quality", "u1")])
    legacy["source_ts"], legacy["value"], legacy["quality"] = np.iinfo(np.int64).min, np.nan, 2
    ids = dict(db.execute("SELECT tag, id FROM tags").fetchall())
    for tag, ts, value in zip(TAGS, [5, 6, 7], [1.0, 2.0, 3.0], strict=True):
        legacy[ids[tag]] = (ts, value, ts, ts, 0, 0)
    db.execute("DELETE FROM latest")
    db.execute("DELETE FROM meta WHERE key = 'latest_shift'")
    if shift != 10:
        db.execute("INSERT INTO meta(key, value) VALUES ('latest_shift', ?)", (shift,))
    db.execute("INSERT INTO latest(block, data) VALUES (0, ?)",
               (b"".join(legacy[name].tobytes() for name in legacy.dtype.names),))
    db.commit()
    db.close()
    before = EmbeddedHistorian(path, TAGS, readonly=True)
    assert before.latest().value.tolist() == [1.0, 2.0, 3.0]
    before.close()
    h = EmbeddedHistorian(path, TAGS)  # converts
    h.store([(2, Batch.of(source_ts=[8], point=[1], value=[20.0], quality=0))])
    h.close()
    after = EmbeddedHistorian(path, TAGS, readonly=True)
    assert after.latest().value.tolist() == [1.0, 20.0, 3.0]
    after.close()


def test_a_store_of_a_few_readings_writes_a_few_pages(open_historian) -> None:
    """A 25-tag site stores 25 readings a second: each store may write the pages it changes
    (its rows, the latest row, the cursor, index and header), not a latest block sized for
    1,024 tags (~100 KiB a store, 11 GiB a day). Bytes handed to write() by this process
    (`wchar`), which the page cache turns into as many on the disk."""
    h = open_historian([f"t{i}" for i in range(25)])

    def store(seq: int) -> None:
        h.store([(seq, Batch.of(source_ts=np.full(25, seq), point=np.arange(25),
                                value=np.ones(25), quality=0))])

    def wchar() -> int:
        with open("/proc/self/io") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("wchar:"))

    for seq in range(1, 6):  # the tables' first pages
        store(seq)
    before = wchar()
    for seq in range(6, 56):
        store(seq)
    assert (wchar() - before) / 50 < 8 * 4096


@pytest.mark.parametrize("devices, points, polls", [
    (4, 2_500, 10),  # 10,000 tags: a 10-s flush, one store
    (20, 2_500, 2),  # 50,000 tags: a flush is five stores of 100,000 readings
])
def test_a_flush_of_many_tags_holds_little_beside_its_readings(
        tmp_path: Path, devices: int, points: int, polls: int) -> None:
    """Issue 17: the gateway's historian commits `flush_interval` (10 s) of readings at once
    (100,000 readings, 41 bytes each, a batch per device and poll), its periodic peak. The
    sorted copy of the columns and the latest values kept to undo a failed commit held 53
    bytes a reading beside the batches at 10,000 tags, 86 at 50,000 (+11 MB of a 50,000-tag
    gateway's RSS for a second, every commit); sorted and packed a part at a time, ~18: the
    tags, the sort's indices and the batch of each reading."""
    tags = [f"plc{d}.f{k}" for d in range(devices) for k in range(points)]
    h = EmbeddedHistorian(tmp_path / "h.sqlite", tags)
    entries = [(s * devices + d + 1, Batch.of(
        source_ts=np.full(points, s * 10**9), point=np.arange(d * points, (d + 1) * points),
        value=np.arange(points, dtype=float), quality=Quality.GOOD))
        for s in range(polls) for d in range(devices)]
    readings = points * devices * polls
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        h.store(entries)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
        h.close()
    assert peak / readings <= 30, f"{peak / readings:.0f} bytes a reading"
    reopened = EmbeddedHistorian(tmp_path / "h.sqlite", tags)
    try:
        assert reopened.history(tags[-7], 0, 2**62).source_ts.tolist() == [
            s * 10**9 for s in range(polls)]
        latest = reopened.latest()
        assert len(latest) == len(tags)
        assert (latest.source_ts == (polls - 1) * 10**9).all()
    finally:
        reopened.close()


def test_a_move_into_chunks_holds_little_beside_the_group_it_moves(tmp_path: Path) -> None:
    """Issue 17: a group's fresh rows are moved into per-tag chunks at 256k readings (every
    ~17 min at 10,000 tags polled every second, each of their 40 groups). Every blob fetched,
    then joined, then sorted whole held 131 bytes a reading at the peak (34 MB); read into
    columns as the rows come and sorted a column at a time, the columns, one sorted column
    and the sort's indices."""
    tags = [f"plc.f{k}" for k in range(255)]  # tag ids 1-255: one group
    h = EmbeddedHistorian(tmp_path / "h.sqlite", tags)
    polls, per_store = 1000, 50
    for s in range(0, polls, per_store):
        h.store([(s + 1, Batch.of(
            source_ts=np.repeat(np.arange(s, s + per_store) * 10**9, len(tags)),
            point=np.tile(np.arange(len(tags)), per_store),
            value=np.tile(np.arange(len(tags), dtype=float), per_store),
            quality=Quality.GOOD))])
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        h.compact(full=True)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    try:
        db = sqlite3.connect(tmp_path / "h.sqlite")
        try:
            assert db.execute("SELECT count(*) FROM fresh").fetchone() == (0,)
        finally:
            db.close()
        assert h.history(tags[9], 0, 2**62).source_ts.tolist() == [
            s * 10**9 for s in range(polls)]
    finally:
        h.close()
    readings = polls * len(tags)
    assert peak / readings <= 70, f"{peak / readings:.0f} bytes a reading"


def test_a_store_of_more_readings_of_a_group_than_a_part_lands_whole(
        open_historian, tmp_path: Path) -> None:
    """A backlog of a few tags (one group of 256 tag ids) is packed in rows of at most
    PART_READINGS readings, in one commit with the cursor: every reading stored once, in time
    order, latest the newest."""
    h = open_historian()
    n = 3 * PART_READINGS  # per tag: the group's 9 parts' worth
    ts = np.arange(n, dtype=np.int64)[::-1]  # arrival newest first: the sort must put it right
    h.store([(7, Batch.of(source_ts=np.tile(ts, len(TAGS)),
                          point=np.repeat(np.arange(len(TAGS)), n),
                          value=np.tile(ts.astype(float), len(TAGS)), quality=Quality.GOOD))])
    db = sqlite3.connect(tmp_path / "h.sqlite")
    try:
        rows = db.execute("SELECT grp, n FROM fresh").fetchall()
    finally:
        db.close()
    assert {g for g, _ in rows} == {0}
    assert sum(k for _, k in rows) == n * len(TAGS)
    assert max(k for _, k in rows) <= PART_READINGS
    assert h.cursor() == 7
    for tag in TAGS:
        got = h.history(tag, 0, 2**62)
        assert got.source_ts.tolist() == list(range(n))
        assert got.value.tolist() == [float(t) for t in range(n)]
    latest = h.latest()
    assert latest.source_ts.tolist() == [n - 1] * len(TAGS)


@pytest.mark.parametrize("tags, readings", [
    (25, 50_000),  # a backlog of a small site: commits of 50,000
    (10_000, 50_000),  # a 10-s flush at 1 s in two commits: the 100 MB aim's +3 MB, not +6
    (15_000, 75_000),  # at least 5 polls of every tag a commit (its latest rows rewritten)
    (50_000, 100_000),  # a 10-s flush in five: half as much would write 15 % more
])
def test_a_commit_takes_at_most_what_the_aims_allow(tags: int, readings: int) -> None:
    assert store_readings(tags) == readings
