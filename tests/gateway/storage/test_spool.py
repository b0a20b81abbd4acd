"""The on-disk spool and the drain into a sink: what survives a crash, what the bounds drop.

Crash tests kill real child processes with SIGKILL; the children run functions of this module
(`python -c "import test_spool; ..."`), so what they write is `seq_batch(seq)`, a function of
the sequence number alone, and the parent knows what every record must hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import re
import resource
import selectors
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from anomaly.core.batch import Batch, Quality
from gateway.site.model import Point, SpoolSection
from gateway.status import SinkStatus, SpoolStatus
from gateway.storage.drain import drain
from gateway.storage.historian import EmbeddedHistorian
from gateway.storage.spool import HEADER, ROW_BYTES, PointList, Spool, SpoolError, payload_length

TESTS = Path(__file__).parent
POINTS = 40


def seq_batch(seq: int, rows: int = 50) -> Batch:
    """The batch a test appends as record `seq`: every column derived from `seq`."""
    i = np.arange(rows)
    quality = np.where((seq + i) % 7 == 0, Quality.BAD, (seq + i) % 2)
    ts = seq * 1000 + i % 1000  # seqs start near 1.8e15 (microseconds since the epoch)
    return Batch.of(source_ts=ts, gateway_ts=ts + 5,
                    point=(seq + i) % POINTS, quality=quality, cause=(seq + i) % 7 == 0,
                    value=np.where(quality == Quality.BAD, np.nan, seq + i / rows))


def assert_batches_equal(a: Batch, b: Batch) -> None:
    for name in Batch.DTYPES:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def read_all(spool: Spool, max_rows: int = 10_000) -> list[tuple[int, Batch]]:
    out, seq = [], 0
    for _ in range(100_000):
        entries = spool.read_after(seq, max_rows)
        if not entries:
            return out
        out += entries
        seq = entries[-1][0]
    raise AssertionError("read_after never caught up")


@pytest.fixture
def open_spool(tmp_path: Path) -> Iterator[Callable[..., Spool]]:
    """Open (or reopen) the spool in `tmp_path/spool` with settings overridden by keyword."""
    opened: list[Spool] = []

    def open_(status: SpoolStatus | None = None, **settings: float) -> Spool:
        # Sizes far below a site file's ranges (segments of a few batches) test rotation:
        # built without validation, as no site file may ask for them.
        section = SpoolSection.model_construct(**settings)  # type: ignore[arg-type]
        spool = Spool(tmp_path / "spool", section, status or SpoolStatus())
        opened.append(spool)
        return spool

    yield open_
    for spool in opened:
        spool.close()


# --- records -------------------------------------------------------------------------------


@pytest.mark.parametrize("sizes", [[1], [7, 1, 1000], [0, 3], [50] * 30])
def test_round_trip_returns_every_batch_in_order(open_spool, sizes) -> None:
    spool = open_spool()
    seqs = [spool.append(seq_batch(i, rows)) for i, rows in enumerate(sizes)]
    assert seqs == list(range(seqs[0], seqs[0] + len(sizes)))
    entries = read_all(spool, max_rows=60)
    assert [s for s, _ in entries] == seqs
    for (_, got), (i, rows) in zip(entries, enumerate(sizes), strict=True):
        assert_batches_equal(got, seq_batch(i, rows))
    assert spool.read_after(seqs[-1], 100) == []


@pytest.mark.parametrize("max_rows", [1, 60, 10_000])
def test_records_by_reference_read_what_read_after_reads(open_spool, max_rows) -> None:
    """What the historian's drain stores: the same records, each column read from its
    segment when asked, across segments."""
    spool = open_spool(segment_bytes=4096)
    for i, rows in enumerate([7, 1, 50, 0, 30, 50, 50, 3]):
        spool.append(seq_batch(i, rows))
    seq, whole, by_reference = 0, [], []
    while entries := spool.read_records_after(seq, max_rows):
        assert [s for s, _ in entries] == [s for s, _ in spool.read_after(seq, max_rows)]
        by_reference += entries
        seq = entries[-1][0]
    whole = read_all(spool)
    assert [s for s, _ in by_reference] == [s for s, _ in whole]
    for (_, record), (_, batch) in zip(by_reference, whole, strict=True):
        assert_batches_equal(Batch(**{k: record.column(k) for k in Batch.DTYPES}), batch)
        assert len(record) == len(batch)


def test_a_drain_commit_holds_little_of_its_spooled_readings(tmp_path: Path) -> None:
    """Issue 17: the historian's drain commits 50,000 readings at 10,000 tags (5 polls of 4
    devices of 2,500). Read whole (`read_after`), the commit's records (41 bytes a reading)
    were held beside the store's own peak: 71 bytes a reading at the peak (RSS +3-3.5 MB on
    the gateway's commits); by reference, their columns read a part at a time: 22 (the
    first store of a file; 17.5 after)."""
    devices, points, polls = 4, 2_500, 5
    tags = [f"plc{d}.f{k}" for d in range(devices) for k in range(points)]
    spool = Spool(tmp_path / "spool", SpoolSection(), SpoolStatus())
    generation = spool.use_points([Point(tag=t) for t in tags])
    h = EmbeddedHistorian(tmp_path / "h.sqlite", tags)
    try:
        for s in range(polls):
            for d in range(devices):
                spool.append(Batch.of(
                    source_ts=np.full(points, s * 10**9),
                    point=np.arange(d * points, (d + 1) * points),
                    value=np.arange(points, dtype=float), quality=Quality.GOOD))
        readings = devices * points * polls
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            h.store(spool.read_records_after(0, readings), generation)
            peak = tracemalloc.get_traced_memory()[1] - before
        finally:
            tracemalloc.stop()
        assert h.cursor() == spool.last_seq
        assert h.history(tags[-7], 0, 2**62).source_ts.tolist() == [
            s * 10**9 for s in range(polls)]
        assert (h.latest().source_ts == (polls - 1) * 10**9).all()
    finally:
        h.close()
        spool.close()
    assert peak / readings <= 30, f"{peak / readings:.0f} bytes a reading"


def test_read_after_returns_about_max_rows_and_at_least_one_record(open_spool) -> None:
    spool = open_spool()
    first = spool.append(seq_batch(0, 100))
    for i in range(1, 10):
        spool.append(seq_batch(i, 100))
    assert [len(b) for _, b in spool.read_after(first - 1, 250)] == [100, 100, 100]
    assert [len(b) for _, b in spool.read_after(first - 1, 1)] == [100]


def test_sequence_numbers_and_cursors_continue_after_reopen(open_spool) -> None:
    spool = open_spool(segment_bytes=4096)
    seqs = [spool.append(seq_batch(i)) for i in range(5)]
    spool.ack("historian", seqs[2])
    spool.close()
    spool = open_spool(segment_bytes=4096)
    assert spool.last_seq == seqs[-1]
    assert spool.acked("historian") == seqs[2]
    assert spool.append(seq_batch(5)) == seqs[-1] + 1
    assert [s for s, _ in spool.read_after(seqs[2], 1000)] == [*seqs[3:], seqs[-1] + 1]


def test_a_second_process_cannot_open_the_same_spool(open_spool) -> None:
    open_spool()
    with pytest.raises(SpoolError, match="in use"):
        open_spool()


def _tear_half(data: bytes, last: int) -> bytes:
    return data[: last + (len(data) - last) // 2]


def _flip_payload_byte(data: bytes, last: int) -> bytes:
    i = len(data) - 10
    return data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :]


@pytest.mark.parametrize("damage", [
    pytest.param(_tear_half, id="half-written record"),
    pytest.param(lambda d, last: d[: last + HEADER.size - 3], id="torn header"),
    pytest.param(lambda d, last: d[: last + HEADER.size], id="header without payload"),
    pytest.param(_flip_payload_byte, id="crc mismatch"),
    pytest.param(lambda d, last: d + b"\x00garbage" * 5, id="garbage after the last record"),
])
def test_torn_tail_is_cut_off_and_earlier_records_stay(open_spool, tmp_path, caplog,
                                                       damage) -> None:
    spool = open_spool()
    seqs = [spool.append(seq_batch(i, 30 + i)) for i in range(4)]
    spool.close()
    (segment,) = (tmp_path / "spool").glob("*.seg")
    data = segment.read_bytes()
    last = len(data) - (HEADER.size + payload_length(33))  # where the 4th record starts
    damaged = damage(data, last)
    segment.write_bytes(damaged)

    with caplog.at_level(logging.WARNING, logger="gateway.storage.spool"):
        spool = open_spool()
    kept = [s for s, _ in read_all(spool)]
    survived = seqs if damaged.startswith(data) else seqs[:3]
    assert kept == survived
    for seq, batch in read_all(spool):
        assert_batches_equal(batch, seq_batch(seq - seqs[0], 30 + seq - seqs[0]))
    assert spool.append(seq_batch(9)) == survived[-1] + 1
    assert "event=spool_torn_tail" in caplog.text


@contextlib.contextmanager
def file_size_limit(limit: int) -> Iterator[None]:
    """Writes past `limit` bytes fail (EFBIG), as on a full disk: RLIMIT_FSIZE, for real."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)


def test_a_refused_write_is_held_then_written_in_order_leaving_no_partial_record(
        open_spool, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr("gateway.storage.spool.RETRY_INTERVAL", 0.0)
    spool = open_spool()
    first = spool.append(seq_batch(0, 1000))
    (segment,) = (tmp_path / "spool").glob("*.seg")
    with file_size_limit(segment.stat().st_size + 20_000):
        assert spool.append(seq_batch(1, 1000)) is None  # ~33 kB: only part of it fits
        assert spool.append(seq_batch(2, 1000)) is None  # behind it, in order
        assert (spool.status.held_readings, spool.status.cause) == (2000, "disk_full")
    assert spool.append(seq_batch(3, 1000)) == first + 3
    assert (spool.status.held_readings, spool.status.cause) == (0, None)
    spool.close()
    entries = read_all(open_spool())
    assert [s for s, _ in entries] == [first, first + 1, first + 2, first + 3]
    for i, (_, batch) in enumerate(entries):
        assert_batches_equal(batch, seq_batch(i, 1000))
    assert spool.status.readings_lost_total == 0


def test_held_readings_beyond_the_memory_bound_are_counted_and_logged(
        open_spool, tmp_path, monkeypatch, caplog) -> None:
    """Nothing is lost silently: not when memory fills too, nor at a shutdown that cannot
    write what is held."""
    monkeypatch.setattr("gateway.storage.spool.HOLD_BYTES", 3 * 50 * ROW_BYTES)
    spool = open_spool()
    spool.append(seq_batch(0))
    (segment,) = (tmp_path / "spool").glob("*.seg")
    with file_size_limit(segment.stat().st_size), caplog.at_level(logging.ERROR):
        for seq in range(1, 6):
            assert spool.append(seq_batch(seq)) is None
        assert (spool.status.held_readings, spool.status.readings_lost_total) == (150, 100)
        spool.close()
    assert spool.status.readings_lost_total == 250
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.startswith("event=spool_write_failed cause=disk_full") for line in lines)
    assert any(line.startswith("event=spool_drop reason=disk_full readings=50 ")
               for line in lines)
    assert any("event=spool_drop reason=disk_full readings=150: still held" in line
               for line in lines)


# --- point lists ---------------------------------------------------------------------------


def points(*tags: str) -> list[Point]:
    return [Point(tag=t, unit=f"u-{t}") for t in tags]


def test_each_record_names_the_point_list_its_indices_refer_to(open_spool) -> None:
    spool = open_spool()
    spool.use_points(points("x"))  # replaced: no record was appended under it
    a = spool.use_points(points("a", "b"))
    old = [spool.append(seq_batch(i)) for i in range(3)]
    assert spool.use_points(points("a", "b")) == a  # unchanged: no new generation
    b = spool.use_points([*points("b", "a"), Point(tag="c", kind="flow")])
    new = [spool.append(seq_batch(i)) for i in range(3, 5)]
    spool.close()
    spool = open_spool()
    # One answer never mixes lists, so a sink maps a whole read with one list.
    assert [s for s, _ in spool.read_after(0, 10**6)] == old
    assert [s for s, _ in spool.read_after(old[-1], 10**6)] == new
    assert [spool.points_for(s) for s in old + new] == [a] * 3 + [b] * 2
    assert b.points == spool.points_for(new[0]).points
    assert len(list(spool.directory.glob("points-*.json"))) == 2


def test_a_reopened_spool_given_its_list_again_holds_the_callers_points(open_spool) -> None:
    # A restarted gateway held its site's points and the file's copy of them: twice the
    # memory (~20 MB at 50,000 points).
    spool = open_spool()
    spool.use_points(points("a", "b"))
    seq = spool.append(seq_batch(0))
    spool.close()
    spool = open_spool()
    site = points("a", "b")
    assert spool.use_points(site).first_seq == spool.points_for(seq).first_seq  # the same list
    assert all(x is y for x, y in zip(spool.points_for(seq).points, site, strict=True))
    assert len(list(spool.directory.glob("points-*.json"))) == 1


def test_a_point_list_is_deleted_with_its_last_record(open_spool) -> None:
    spool = open_spool(segment_bytes=1)  # one record per segment
    spool.use_points(points("a"))
    old = spool.append(seq_batch(0))
    spool.use_points(points("b"))
    new = spool.append(seq_batch(1))
    spool.ack("historian", old)
    assert len(list(spool.directory.glob("points-*.json"))) == 1
    assert spool.points_for(new).tags == ["b"]


@pytest.mark.parametrize(("now", "points", "values"), [
    (["a", "b", "c"], [0, 1, 2, 1], [1, 2, 3, 4]),
    (["c", "a"], [1, 0], [1, 3]),  # b removed, c moved
    ([], [], []),
])
def test_a_batch_is_reindexed_to_the_current_point_list(now, points, values) -> None:
    spooled = PointList(1, tuple(Point(tag=t) for t in ["a", "b", "c"]))
    batch = Batch.of(source_ts=[1, 2, 3, 4], point=[0, 1, 2, 1], value=[1, 2, 3, 4],
                     quality=0)
    got = spooled.reindex(batch, now)
    assert (got.point.tolist(), got.value.tolist()) == (points, values)


def test_a_spool_without_point_lists_takes_the_first_for_its_backlog(open_spool) -> None:
    spool = open_spool()
    seq = spool.append(seq_batch(0))
    assert spool.points_for(seq) is None
    assert spool.use_points(points("a")).first_seq == seq


# --- crashes -------------------------------------------------------------------------------


def child_append(directory: str, rows: int, limit: float) -> None:
    """Child process: append `seq_batch`es and print each seq once `append()` returned."""
    spool = Spool(Path(directory), SpoolSection(segment_bytes=1 << 20), SpoolStatus())
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        seq = spool.append(seq_batch(spool.last_seq + 1, rows))
        print(seq, flush=True)


def spawn(call: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", f"import test_spool as t; t.{call}"],
                            cwd=TESTS, stdout=subprocess.PIPE)


def read_lines(proc: subprocess.Popen, until: Callable[[list[str]], bool],
               timeout: float) -> list[str]:
    """Complete lines the child printed, read until `until(lines)` or the timeout."""
    buf = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if sel.select(deadline - time.monotonic()):
                chunk = os.read(proc.stdout.fileno(), 1 << 16)
                if not chunk:
                    break
                buf += chunk
            lines = buf.decode().split("\n")[:-1]
            if until(lines):
                return lines
    return buf.decode().split("\n")[:-1]


def kill9(proc: subprocess.Popen) -> list[str]:
    """SIGKILL the child; return the complete lines it printed before dying."""
    proc.send_signal(signal.SIGKILL)
    rest = proc.stdout.read().decode()
    proc.wait(10)
    return rest.split("\n")[:-1]  # the last piece is empty or a line cut short


def test_kill9_while_appending_loses_no_returned_append(open_spool, tmp_path) -> None:
    directory = tmp_path / "spool"
    returned: list[int] = []
    rng = random.Random(7)
    for _ in range(3):
        # Big records (~0.7 MB) so the kill often lands inside a write.
        proc = spawn(f"child_append({str(directory)!r}, rows=20_000, limit=20)")
        wanted = rng.randint(5, 40)
        lines = read_lines(proc, lambda lines, n=wanted: len(lines) >= n, timeout=20)
        lines += kill9(proc)
        returned += [int(x) for x in lines]
    assert len(returned) >= 15

    spool = open_spool()
    entries = dict(read_all(spool, max_rows=1))
    assert set(returned) <= set(entries)
    assert sorted(entries) == list(range(min(entries), max(entries) + 1))
    for seq, batch in entries.items():
        assert_batches_equal(batch, seq_batch(seq, 20_000))


def child_gateway(directory: str, feed: bool, limit: float) -> None:
    """Child process: a gateway in miniature. Pollers append `seq_batch`es (printing each
    returned seq) while a drain task stores them into the historian; without `feed`, only
    drains until the historian holds everything, then prints "done"."""
    directory_ = Path(directory)

    async def main() -> None:
        spool = Spool(directory_ / "spool", SpoolSection(segment_bytes=1 << 16), SpoolStatus())
        historian = EmbeddedHistorian(directory_ / "historian.sqlite",
                                      [f"t{i}" for i in range(POINTS)])
        sink = asyncio.create_task(drain(spool, historian, SinkStatus("historian"),
                                         spool.read_records_after, max_rows=300, idle=0.001))
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if feed:
                print(spool.append(seq_batch(spool.last_seq + 1)), flush=True)
            elif historian.cursor() == spool.last_seq:
                print("done", flush=True)
                return
            await asyncio.sleep(0.001)
        sink.cancel()

    asyncio.run(main())


def test_kill9_of_the_gateway_then_restart_stores_every_reading_exactly_once(tmp_path) -> None:
    returned: list[int] = []
    rng = random.Random(3)
    for _ in range(4):
        proc = spawn(f"child_gateway({str(tmp_path)!r}, feed=True, limit=20)")
        wanted = rng.randint(50, 400)
        lines = read_lines(proc, lambda lines, n=wanted: len(lines) >= n, timeout=20)
        lines += kill9(proc)
        returned += [int(x) for x in lines]
    proc = spawn(f"child_gateway({str(tmp_path)!r}, feed=False, limit=30)")
    assert read_lines(proc, lambda lines: "done" in lines, timeout=30)[-1:] == ["done"]
    assert proc.wait(10) == 0

    historian = EmbeddedHistorian(tmp_path / "historian.sqlite",
                                  [f"t{i}" for i in range(POINTS)], readonly=True)
    stored = Batch.concat([historian.history(f"t{i}", 0, 2**62) for i in range(POINTS)])
    historian.close()
    seqs = np.unique(stored.source_ts // 1000)
    # Every append that returned is stored, and so is everything spooled before the last one.
    assert set(returned) <= set(seqs.tolist())
    assert seqs.tolist() == list(range(min(returned), int(seqs.max()) + 1))
    expected = Batch.concat([seq_batch(int(s)) for s in seqs])
    key = lambda b: np.lexsort((b.source_ts, b.point))  # noqa: E731
    assert len(stored) == len(expected)  # exactly once
    assert_batches_equal(stored.take(key(stored)), expected.take(key(expected)))


# --- bounds and retention --------------------------------------------------------------------


def dropped_in_log(text: str) -> int:
    return sum(int(n) for n in re.findall(r"event=spool_drop .*readings=(\d+)", text))


def test_size_bound_drops_the_oldest_and_counts_and_logs_it(open_spool, caplog) -> None:
    status = SpoolStatus()
    spool = open_spool(status, max_bytes=40_000, segment_bytes=4_000)
    with caplog.at_level(logging.WARNING, logger="gateway.storage.spool"):
        seqs = [spool.append(seq_batch(i)) for i in range(100)]
    kept = read_all(spool)
    assert [s for s, _ in kept] == seqs[-len(kept):]  # the newest, contiguous
    assert status.bytes <= 40_000
    assert status.readings_dropped_total == 50 * (100 - len(kept)) > 0
    assert dropped_in_log(caplog.text) == status.readings_dropped_total
    assert status.readings_appended_total == 50 * 100


def test_age_bound_drops_the_oldest_and_counts_and_logs_it(open_spool, caplog) -> None:
    status = SpoolStatus()
    spool = open_spool(status, max_age=0.3, segment_bytes=1)  # one record per segment
    old = [spool.append(seq_batch(i)) for i in range(3)]
    time.sleep(0.4)
    with caplog.at_level(logging.WARNING, logger="gateway.storage.spool"):
        new = spool.append(seq_batch(3))
    assert [s for s, _ in read_all(spool)] == [new]
    assert status.readings_dropped_total == 50 * len(old)
    assert dropped_in_log(caplog.text) == 50 * len(old)
    assert "reason=age" in caplog.text


def test_drop_counts_only_what_some_sink_has_not_acked(open_spool, caplog) -> None:
    status = SpoolStatus()
    # Room for the first 20 records (~2.1 kB each): only the later ones overflow it.
    spool = open_spool(status, max_bytes=50_000, segment_bytes=4_000)
    spool.ack("historian", 0)
    spool.ack("influxdb", 0)
    seqs = [spool.append(seq_batch(i)) for i in range(20)]
    assert status.readings_dropped_total == 0
    spool.ack("historian", seqs[-1])
    spool.ack("influxdb", seqs[9])  # the slower sink holds the rest
    with caplog.at_level(logging.WARNING, logger="gateway.storage.spool"):
        more = [spool.append(seq_batch(i)) for i in range(20, 100)]
    kept = {s for s, _ in read_all(spool)}
    lost = [s for s in seqs[10:] + more if s not in kept]
    assert status.readings_dropped_total == 50 * len(lost) > 0
    assert dropped_in_log(caplog.text) == 50 * len(lost)


def test_segments_are_deleted_once_every_sink_acked_them(open_spool, tmp_path) -> None:
    status = SpoolStatus()
    spool = open_spool(status, segment_bytes=4_000)
    spool.ack("historian", 0)
    spool.ack("influxdb", 0)
    seqs = [spool.append(seq_batch(i)) for i in range(30)]
    segments = len(list((tmp_path / "spool").glob("*.seg")))
    assert segments > 3
    spool.ack("historian", seqs[-1])
    assert len(list((tmp_path / "spool").glob("*.seg"))) == segments
    spool.ack("influxdb", seqs[-1])
    assert len(list((tmp_path / "spool").glob("*.seg"))) == 1  # the one being written
    assert spool.append(seq_batch(30)) == seqs[-1] + 1
    assert status.readings_dropped_total == 0


def test_a_reader_thread_sees_complete_batches_while_the_writer_appends(open_spool) -> None:
    spool = open_spool(segment_bytes=20_000)
    first = spool.append(seq_batch(0))
    got: list[tuple[int, Batch]] = []

    def reader() -> None:
        seq = first - 1
        deadline = time.monotonic() + 20
        while len(got) < 500 and time.monotonic() < deadline:
            entries = spool.read_after(seq, 120)
            got.extend(entries)
            seq = entries[-1][0] if entries else seq

    thread = threading.Thread(target=reader)
    thread.start()
    for i in range(1, 500):
        spool.append(seq_batch(i))
    thread.join(30)
    assert [s for s, _ in got] == list(range(first, first + 500))
    for seq, batch in got:
        assert_batches_equal(batch, seq_batch(seq - first))


# --- drain -----------------------------------------------------------------------------------


class ListSink:
    """A sink that keeps what it stores in memory and fails while `failures` lasts.

    Not a stand-in for a real part: the drain's contract is with any sink, and this one
    fails on demand, which a real store does only by accident.
    """

    name = "memory"

    def __init__(self, failures: int = 0, gate: threading.Event | None = None) -> None:
        self.stored: list[tuple[int, Batch]] = []
        self.failures = failures
        self.gate = gate
        self.started = threading.Event()

    def cursor(self) -> int:
        return self.stored[-1][0] if self.stored else 0

    def store(self, entries: Sequence[tuple[int, Batch]], points: PointList | None) -> None:
        self.started.set()
        if self.gate is not None:
            self.gate.wait(10)
        if self.failures:
            self.failures -= 1
            raise OSError("sink unreachable")
        self.stored += entries


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


def test_drain_retries_a_failing_sink_and_skips_nothing(open_spool, caplog) -> None:
    spool = open_spool()
    seqs = [spool.append(seq_batch(i)) for i in range(10)]
    sink, status = ListSink(failures=2), SinkStatus("memory")

    async def main() -> None:
        task = asyncio.create_task(drain(spool, sink, status, spool.read_after, max_rows=120,
                                         idle=0.001, backoff=0.01))
        await until(lambda: sink.cursor() == seqs[-1])
        more = spool.append(seq_batch(10))
        await until(lambda: sink.cursor() == more and status.backlog_readings == 0)
        task.cancel()

    with caplog.at_level(logging.WARNING, logger="gateway.storage.drain"):
        asyncio.run(main())
    assert [s for s, _ in sink.stored] == [*seqs, seqs[-1] + 1]
    assert status.errors_total == 2 and "sink unreachable" in status.last_error
    assert caplog.text.count("event=sink_error") == 2
    assert status.readings_total == 11 * 50
    assert spool.acked("memory") == seqs[-1] + 1


def test_drain_waits_on_an_empty_spool_then_stores(open_spool) -> None:
    spool = open_spool()
    sink, status = ListSink(), SinkStatus("memory")

    async def main() -> None:
        task = asyncio.create_task(drain(spool, sink, status, spool.read_after, idle=0.001))
        await asyncio.sleep(0.05)  # many idle rounds over nothing
        seq = spool.append(seq_batch(0))
        await until(lambda: sink.cursor() == seq and status.backlog_readings == 0)
        task.cancel()

    asyncio.run(main())
    assert status.errors_total == 0 and status.readings_total == 50


def test_drain_stores_its_first_readings_at_once_then_gathers_for_idle(open_spool) -> None:
    # A gateway just started shows its first poll within a poll, not after the historian's
    # flush_interval; after that, a caught-up drain gathers for `idle` (one commit each).
    spool = open_spool()
    sink, status = ListSink(), SinkStatus("historian")

    async def main() -> None:
        task = asyncio.create_task(drain(spool, sink, status, spool.read_after, idle=60.0))
        await asyncio.sleep(0.1)  # the drain has looked at an empty spool
        first = spool.append(seq_batch(0))
        await until(lambda: sink.cursor() == first, timeout=10.0)
        spool.append(seq_batch(1))
        await asyncio.sleep(0.5)
        assert sink.cursor() == first  # gathering now
        task.cancel()

    asyncio.run(main())
    assert status.readings_total == 50


def test_cancelled_drain_finishes_and_acks_the_store_in_progress(open_spool) -> None:
    spool = open_spool()
    seqs = [spool.append(seq_batch(i)) for i in range(3)]
    gate = threading.Event()
    sink = ListSink(gate=gate)

    async def main() -> None:
        task = asyncio.create_task(drain(spool, sink, SinkStatus("memory"), spool.read_after,
                                         idle=0.001))
        await until(sink.started.is_set)
        task.cancel()
        await asyncio.sleep(0.05)
        assert not task.done()  # still waiting for the store
        gate.set()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert [s for s, _ in sink.stored] == seqs
    assert spool.acked("memory") == seqs[-1]


@pytest.mark.parametrize(("release", "handed_back"), [(True, 1), (False, 0)],
                         ids=["historian", "other sinks"])
def test_a_drain_hands_back_free_heap_pages_once_it_has_caught_up(
        open_spool, monkeypatch: pytest.MonkeyPatch, release: bool, handed_back: int) -> None:
    """Issue 17: the historian stores a `flush_interval` of readings at once, and what that
    frees stayed resident until the gateway's periodic hand-back: its drain hands the pages
    back once caught up (once, not after each of the stores a catch-up takes: each would
    fault them back in)."""
    calls: list[int] = []
    monkeypatch.setattr("gateway.storage.drain.release_free_memory", lambda: calls.append(1))
    spool = open_spool()
    seqs = [spool.append(seq_batch(i)) for i in range(10)]  # 500 readings: five stores
    sink, status = ListSink(), SinkStatus("memory")

    async def main() -> None:
        task = asyncio.create_task(drain(spool, sink, status, spool.read_after, max_rows=100,
                                         idle=60.0, release=release))
        await until(lambda: sink.cursor() == seqs[-1])
        await asyncio.sleep(0.1)  # caught up: waiting for the next flush
        task.cancel()

    asyncio.run(main())
    assert len(calls) == handed_back
