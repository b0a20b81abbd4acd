"""The on-disk spool: every batch is appended here before its poll counts as done.

Layout: a directory of append-only segment files named by the sequence number of their first
record (`00000001700000000000.seg`), one `<sink>.cursor` file per sink, and a `LOCK` file
(one process per spool). A record is a 32-byte header followed by the batch columns as raw
numpy bytes, padded to 8 bytes so every column of a read buffer is aligned:

    magic "SWSP" | crc32 (of the rest of the header and the payload) | seq u64 | rows u32 |
    payload length u32 | append time i64 ns | payload

A full disk: a batch the disk refuses is held in memory (up to HOLD_BYTES, beyond which the
oldest held are dropped, counted in `readings_lost_total` and logged), is not acknowledged
(`append` returns None), and is written, in order, once the disk takes writes again (tried
every RETRY_INTERVAL at the next append). `status.cause` says why meanwhile (`disk_full`).

Durability: a record is written with one `writev()`, so once `append()` returns it survives a
crash of the process (kill -9): the kernel holds it. Surviving a power loss needs it on the disk:
`fsync_interval = 0` syncs every append (a few ms each on most disks); a larger interval syncs at
most that often, so a power cut loses at most the last `fsync_interval` seconds. A record torn
by either kind of crash fails its CRC and is cut off when the spool reopens.

Sequence numbers rise by one per record and never repeat, even if the directory is wiped: a new
spool starts numbering at the current time in microseconds, above anything an earlier spool
can have reached, so a sink's stored cursor never hides new records.

Point lists: a record's `point` column indexes the site's point list as it was when the record
was appended. Each point list the spool has seen is a generation, `points-<first seq>.json`
(written atomically, with the labels a sink files readings under: tag, device, kind, unit,
zone), kept while a record of it is held. `use_points()` starts one when the list changes;
`read_after()` never mixes generations in one answer, and `points_for(seq)` says which list a
record's indices refer to, so every sink maps them to tags itself, whatever the list is now.

Retention: sinks `ack()` what they have stored (`<sink>.cursor`, overwritten in place);
a segment every known sink has acked is deleted. The size and age bounds drop the oldest
segments whether acked or not; the readings some sink had not acked are counted in
`readings_dropped_total` and logged (`event=spool_drop`).
"""

from __future__ import annotations

import fcntl
import functools
import json
import logging
import os
import re
import struct
import threading
import time
import zlib
from array import array
from bisect import bisect_right
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from anomaly.core.batch import Batch
from gateway.data_dir import write_atomically
from gateway.failures import cause_of
from gateway.site.model import Point, SpoolSection, fields_of
from gateway.status import SpoolStatus

log = logging.getLogger(__name__)

MAGIC = b"SWSP"
HEADER = struct.Struct("<4sIQIIq")  # magic, crc, seq, rows, payload length, append time
# Payload column order: 8-byte columns first so that each column stays aligned.
COLUMNS = ("source_ts", "server_ts", "gateway_ts", "value", "point", "cause", "quality")
DTYPES = {name: np.dtype(Batch.DTYPES[name]) for name in COLUMNS}
ROW_BYTES = sum(dt.itemsize for dt in DTYPES.values())
SEGMENT_SUFFIX = ".seg"
# Bytes of readings held in memory while the disk refuses writes (a full disk): 32 MiB holds
# ~820k readings, 9 hours of a 25-tag site polled every second, 8 s at 100k readings/s.
HOLD_BYTES = 32 << 20
RETRY_INTERVAL = 1.0  # seconds between tries to write what is held
SINK_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
GENERATION = re.compile(r"^points-(\d{20})\.json$")
LABELS = ("tag", "device", "kind", "unit", "zone")  # what a sink files a reading under


class SpoolError(Exception):
    """The spool cannot be opened (in use by another process, or unreadable)."""


@dataclass(frozen=True)
class PointList:
    """A generation of the point list: what the `point` indices of the records from
    `first_seq` on (up to the next generation) refer to."""

    first_seq: int
    points: tuple[Point, ...]

    @functools.cached_property
    def tags(self) -> list[str]:
        """Built once: every sink compares or maps it on every store (10,000 tags: ~0.8 ms)."""
        return [p.tag for p in self.points]

    def reindex(self, batch: Batch, tags: Sequence[str]) -> Batch:
        """`batch` (spooled under this list) with its points as positions in `tags`; readings
        of points not in `tags` are left out."""
        position = {t: i for i, t in enumerate(tags)}
        where = np.array([position.get(t, -1) for t in self.tags], np.int32)
        point = where[batch.point]
        keep = point >= 0
        cols = {k: getattr(batch, k)[keep] for k in Batch.DTYPES}
        return Batch(**cols | {"point": point[keep]})


class Record:
    """A spooled record by reference (`Spool.read_records_after`): where its payload is, and
    its columns read from its segment file when asked, not kept. Records are never rewritten,
    so what is read is what was checked; a segment the bounds drop meanwhile raises
    FileNotFoundError: the sink's store fails and is retried from its cursor, which skips
    what was dropped (counted, as in any read)."""

    __slots__ = ("offset", "path", "rows")

    def __init__(self, path: Path, offset: int, rows: int) -> None:
        self.path, self.offset, self.rows = path, offset, rows

    def __len__(self) -> int:
        return self.rows

    def column(self, name: str) -> np.ndarray:
        """The record's column `name` (one of COLUMNS), read from the file."""
        start = self.offset + sum(self.rows * DTYPES[c].itemsize
                                  for c in COLUMNS[:COLUMNS.index(name)])
        out = np.empty(self.rows, DTYPES[name])
        fd = os.open(self.path, os.O_RDONLY)
        try:
            if os.preadv(fd, [out.data], start) != out.nbytes:
                raise SpoolError(f"{self.path}: short read at {start}")
        finally:
            os.close(fd)
        return out


def _labels(points: Sequence[Point]) -> list[dict]:
    return [fields_of(p, LABELS) for p in points]


def payload_length(rows: int) -> int:
    return (rows * ROW_BYTES + 7) & ~7


@dataclass
class _Segment:
    """One segment file and the index of its records (offset, cumulative rows, append time)."""

    first_seq: int
    path: Path
    size: int = 0
    offsets: array = field(default_factory=lambda: array("q"))
    rows_cum: array = field(default_factory=lambda: array("q"))
    times: array = field(default_factory=lambda: array("q"))

    @property
    def count(self) -> int:
        return len(self.offsets)

    @property
    def last_seq(self) -> int:
        return self.first_seq + self.count - 1

    @property
    def rows(self) -> int:
        return self.rows_cum[-1] if self.rows_cum else 0

    def rows_of(self, k: int) -> int:
        """Readings in the segment's k-th record."""
        return self.rows_cum[k] - (self.rows_cum[k - 1] if k else 0)

    def rows_after(self, seq: int) -> int:
        """Readings in records with a sequence number above `seq`."""
        k = min(max(seq - self.first_seq + 1, 0), self.count)
        return self.rows - (self.rows_cum[k - 1] if k else 0)

    def add(self, offset: int, rows: int, appended_ns: int, length: int) -> None:
        self.offsets.append(offset)
        self.rows_cum.append(self.rows + rows)
        self.times.append(appended_ns)
        self.size = offset + length


def _segment_name(first_seq: int) -> str:
    return f"{first_seq:020d}{SEGMENT_SUFFIX}"


def _scan(path: Path, first_seq: int, check_crc: bool) -> tuple[_Segment, int]:
    """Index a segment's valid records; also return the file's size (bytes beyond are bad).

    With `check_crc` the whole file is read; without, only the headers.
    """
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        data = f.read() if check_crc else None
        seg = _Segment(first_seq, path)
        pos, seq = 0, first_seq
        while pos + HEADER.size <= size:
            head = (data[pos : pos + HEADER.size] if data is not None
                    else os.pread(f.fileno(), HEADER.size, pos))
            magic, crc, rseq, rows, length, appended = HEADER.unpack(head)
            end = pos + HEADER.size + length
            if magic != MAGIC or rseq != seq or length != payload_length(rows) or end > size:
                break
            if data is not None and zlib.crc32(memoryview(data)[pos + 8 : end]) != crc:
                break
            seg.add(pos, rows, appended, end - pos)
            pos, seq = end, seq + 1
    return seg, size


class Spool:
    """Append-only store of batches with per-sink cursors, bounded by size and age.

    `append()` is called from the event loop; `read_after()` and `ack()` may run in a thread:
    a lock guards the index, and file reads happen outside it.
    """

    def __init__(self, directory: Path, settings: SpoolSection, status: SpoolStatus) -> None:
        self.directory = Path(directory)
        self.settings = settings
        self.status = status
        # A segment must stay well under the size bound, or that bound could only be kept by
        # dropping the segment being written.
        self._segment_bytes = max(1, min(settings.segment_bytes, settings.max_bytes // 4))
        self._lock = threading.Lock()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.directory / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise SpoolError(f"{self.directory}: spool in use by another process") from None
        self._cursors = self._load_cursors()
        self._cursor_fds: dict[str, int] = {}
        self._held: deque[Batch] = deque()  # refused by the disk, oldest first
        self._held_bytes = 0
        self._lost = 0  # held readings dropped since the disk last took writes
        self._retry_at = 0.0
        self._segments = self._load_segments()
        self._generations = self._load_generations()
        active = self._segments[-1]
        self._fd = os.open(active.path, os.O_WRONLY | os.O_APPEND)
        self._last_sync = time.monotonic()
        self._dirty = False
        self._closed = False
        self._enforce_bounds(time.time_ns())
        self._prune_generations()
        self._update_status(time.time_ns())

    # --- opening -----------------------------------------------------------------------

    def _load_cursors(self) -> dict[str, int]:
        cursors = {}
        for path in self.directory.glob("*.cursor"):
            try:
                cursors[path.stem] = int(path.read_text())
            except ValueError:
                # A cursor lost to a power cut only means keeping more: treat it as "nothing".
                log.warning("event=spool_cursor_unreadable path=%s", path)
                cursors[path.stem] = 0
        return cursors

    def _load_segments(self) -> list[_Segment]:
        paths = sorted(self.directory.glob("*" + SEGMENT_SUFFIX))
        segments: list[_Segment] = []
        for i, path in enumerate(paths):
            try:
                first_seq = int(path.stem)
            except ValueError:
                raise SpoolError(f"{path}: not a spool segment name") from None
            last = i == len(paths) - 1
            seg, size = _scan(path, first_seq, check_crc=last)
            if seg.size < size:
                lost = size - seg.size
                if last:
                    # A torn tail: the append that wrote it never returned.
                    log.warning("event=spool_torn_tail segment=%s bytes=%d", path.name, lost)
                else:
                    # Sealed segments are synced before the next one starts; damage here is
                    # the disk's. The readings in it cannot be counted, only the bytes.
                    log.error("event=spool_drop reason=corrupt segment=%s bytes=%d",
                              path.name, lost)
                os.truncate(path, seg.size)
            if seg.count == 0 and not last:
                path.unlink()
                continue
            segments.append(seg)
        if not segments:
            # Numbering starts from the clock so it stays above any earlier spool's.
            start = max(time.time_ns() // 1000, max(self._cursors.values(), default=0) + 1)
            segments.append(self._create_segment(start))
        return segments

    def _load_generations(self) -> list[PointList]:
        out = []
        for path in sorted(self.directory.glob("points-*.json")):
            if not (m := GENERATION.match(path.name)):
                continue
            try:
                points = tuple(Point(**p) for p in json.loads(path.read_text()))
            except (ValueError, TypeError) as e:
                # Written atomically, so only the disk can have damaged it; guessing would
                # file readings under wrong tags.
                raise SpoolError(f"{path}: unreadable point list: {e}") from None
            out.append(PointList(int(m.group(1)), points))
        return out

    def _create_segment(self, first_seq: int) -> _Segment:
        path = self.directory / _segment_name(first_seq)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644))
        self._sync_directory()
        return _Segment(first_seq, path)

    def _sync_directory(self) -> None:
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    # --- writing -----------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        """Sequence number of the newest record (one below the next append's)."""
        return self._segments[-1].first_seq + self._segments[-1].count - 1

    @property
    def first_seq(self) -> int:
        """Sequence number of the oldest record still held."""
        return self._segments[0].first_seq

    def append(self, batch: Batch) -> int | None:
        """Write `batch` as one record and return its sequence number; None when the disk
        refuses it (full, read-only...): the batch is then held in memory, not acknowledged,
        and written with those before it, in order, once the disk takes writes again."""
        with self._lock:
            if self._closed:
                raise SpoolError(f"{self.directory}: spool is closed")
            now = time.time_ns()
            if self._held and not self._write_held():
                self._hold(batch)
                return None
            try:
                seq = self._write(batch, now)
            except OSError as e:
                self._refused(e)
                self._hold(batch)
                return None
            self._enforce_bounds(now)
            self._update_status(now)
        return seq

    def _write(self, batch: Batch, now: int) -> int:
        """Append one record (under the lock); an OSError leaves the spool as it was."""
        columns = [np.ascontiguousarray(getattr(batch, name), DTYPES[name]) for name in COLUMNS]
        rows = len(batch)
        length = payload_length(rows)
        pad = b"\0" * (length - rows * ROW_BYTES)
        if self._segments[-1].size >= self._segment_bytes:
            self._roll()
        seg = self._segments[-1]
        seq = seg.first_seq + seg.count
        rest = HEADER.pack(MAGIC, 0, seq, rows, length, now)[8:]
        crc = zlib.crc32(rest)
        for col in columns:
            crc = zlib.crc32(col.data, crc)
        crc = zlib.crc32(pad, crc)
        header = MAGIC + struct.pack("<I", crc) + rest
        try:
            self._write_all([header, *columns, pad])
        except OSError:
            # Cut off what got written, so the next record starts where the index says.
            os.ftruncate(self._fd, seg.size)
            raise
        seg.add(seg.size, rows, now, HEADER.size + length)
        self._dirty = True
        if (self.settings.fsync_interval == 0
                or time.monotonic() - self._last_sync >= self.settings.fsync_interval):
            try:
                self._sync()
            except OSError as e:
                # Written and indexed (a crash of the process loses nothing); only a power
                # cut could. The next append syncs again.
                self._refused(e, "sync")
        self.status.readings_appended_total += rows
        return seq

    # --- a disk that refuses writes ------------------------------------------------------

    def _refused(self, e: OSError, what: str = "write") -> None:
        first = self.status.cause is None
        self.status.cause = cause_of(e)
        self.status.last_error = f"cannot {what} {self.directory}: {e.strerror or e}"
        self._retry_at = time.monotonic() + RETRY_INTERVAL
        if first:
            log.error("event=spool_write_failed cause=%s error=%r hold_max_bytes=%d",
                      self.status.cause, self.status.last_error, HOLD_BYTES)

    def _hold(self, batch: Batch) -> None:
        """Keep `batch` in memory; beyond HOLD_BYTES the oldest held go, counted and logged."""
        self._held.append(batch)
        self._held_bytes += len(batch) * ROW_BYTES
        while self._held_bytes > HOLD_BYTES and len(self._held) > 1:
            lost = self._held.popleft()
            self._held_bytes -= len(lost) * ROW_BYTES
            if not self._lost:
                log.error("event=spool_drop reason=%s readings=%d held_bytes=%d: memory "
                          "is full too; the oldest held readings are lost from now on",
                          self.status.cause, len(lost), self._held_bytes)
            self._lost += len(lost)
            self.status.readings_lost_total += len(lost)
        self.status.held_readings = sum(len(b) for b in self._held)

    def _write_held(self, force: bool = False) -> bool:
        """Write the held batches, oldest first (at most every RETRY_INTERVAL unless `force`);
        whether none is left."""
        if not force and time.monotonic() < self._retry_at:
            return False
        written = 0
        while self._held:
            now = time.time_ns()
            try:
                self._write(self._held[0], now)
            except OSError as e:
                self._refused(e)
                break
            written += len(self._held.popleft())
            self._enforce_bounds(now)
        self._held_bytes = sum(len(b) * ROW_BYTES for b in self._held)
        self.status.held_readings = sum(len(b) for b in self._held)
        self._update_status(time.time_ns())
        if self._held:
            return False
        log.warning("event=spool_resumed cause=%s readings_written=%d readings_lost=%d",
                    self.status.cause, written, self._lost)
        self.status.cause = self.status.last_error = None
        self._lost = 0
        return True

    def _write_all(self, buffers: list) -> None:
        views = [memoryview(b).cast("B") for b in buffers]
        while views:
            written = os.writev(self._fd, views)
            # A short write (rare: a signal, a full disk) resumes where it stopped.
            while views and written >= len(views[0]):
                written -= len(views.pop(0))
            if views:
                views[0] = views[0][written:]

    def _sync(self) -> None:
        os.fdatasync(self._fd)
        self._last_sync = time.monotonic()
        self._dirty = False

    def _roll(self) -> None:
        """Seal the active segment (synced, so only the newest can ever be torn) and start one.
        An OSError leaves the active segment as it was."""
        self._sync()
        seg = self._create_segment(self.last_seq + 1)
        try:
            fd = os.open(seg.path, os.O_WRONLY | os.O_APPEND)
        except OSError:
            seg.path.unlink(missing_ok=True)
            raise
        os.close(self._fd)
        self._segments.append(seg)
        self._fd = fd

    # --- reading -----------------------------------------------------------------------

    def read_after(self, seq: int, max_rows: int) -> list[tuple[int, Batch]]:
        """Records after `seq`, oldest first, up to about `max_rows` readings (at least one
        record if there is any), all of one point-list generation. Records dropped by the
        bounds are skipped."""
        return [(s, batch) for s, _, _, batch in self._read(seq, max_rows, whole=True)]

    def read_records_after(self, seq: int, max_rows: int) -> list[tuple[int, Record]]:
        """As `read_after`, but each record by reference: its columns read from the segment
        file when asked. A record is read whole once here (its CRC checked) and let go, so a
        sink that takes the columns a part at a time does not hold a commit's records whole
        (41 bytes a reading; issue 17)."""
        return [(s, Record(path, offset, len(batch)))
                for s, path, offset, batch in self._read(seq, max_rows, whole=False)]

    def _read(self, seq: int, max_rows: int, whole: bool
              ) -> Iterator[tuple[int, Path, int, Batch]]:
        """(seq, segment, the payload's offset in it, its batch) of each record `read_after`
        answers; `whole`: a segment's records in one read, else a record a read (the batch's
        buffer let go before the next)."""
        rows = 0
        end: int | None = None  # the last seq of the generation of the first record
        while rows < max_rows:
            with self._lock:
                now = time.time_ns()
                self._enforce_bounds(now)
                self._update_status(now)
                seq = max(seq, self.first_seq - 1)
                if end is None:
                    end = self._generation_end(seq + 1)
                if seq >= min(self.last_seq, end):
                    break
                i = bisect_right([s.first_seq for s in self._segments], seq + 1) - 1
                seg = self._segments[i]
                k0 = seq + 1 - seg.first_seq
                if k0 >= seg.count:  # a gap left by a damaged segment
                    seq = self._segments[i + 1].first_seq - 1
                    continue
                k_end = min(seg.count, end + 1 - seg.first_seq) if whole else k0 + 1
                k1, taken = k0 + 1, rows + seg.rows_of(k0)
                while k1 < k_end and taken < max_rows:
                    k1, taken = k1 + 1, taken + seg.rows_of(k1)
                bounds = [*seg.offsets[k0:k1], seg.offsets[k1] if k1 < seg.count else seg.size]
                counts = [seg.rows_of(k) for k in range(k0, k1)]
                # Opened under the lock so a concurrent drop cannot unlink it first; an open
                # descriptor keeps reading a file that is unlinked afterwards.
                fd = os.open(seg.path, os.O_RDONLY)
            try:
                buf = np.empty(bounds[-1] - bounds[0], np.uint8)
                if os.preadv(fd, [buf.data], bounds[0]) != len(buf):
                    raise SpoolError(f"{seg.path}: short read at {bounds[0]}")
            finally:
                os.close(fd)
            for j, count in enumerate(counts):
                record = buf[bounds[j] - bounds[0] : bounds[j + 1] - bounds[0]]
                batch = self._parse(seg.path, record, seg.first_seq + k0 + j, count)
                if batch is not None:
                    yield seg.first_seq + k0 + j, seg.path, bounds[j] + HEADER.size, batch
                rows += count
            del buf, record, batch  # views of the buffer: a record a read lets it go here
            seq = seg.first_seq + k1 - 1

    def _parse(self, path: Path, record: np.ndarray, seq: int, rows: int) -> Batch | None:
        """The batch in one record, or None (counted and logged) if the record is damaged."""
        magic, crc, rseq, hrows, length, _ = HEADER.unpack_from(record.data)
        if (magic != MAGIC or rseq != seq or hrows != rows
                or len(record) != HEADER.size + length
                or zlib.crc32(record.data[8:]) != crc):
            # Damaged after it was written and indexed: skipping it is a loss, so say so.
            with self._lock:
                self.status.readings_dropped_total += rows
            log.error("event=spool_drop reason=corrupt segment=%s seq=%d readings=%d",
                      path.name, seq, rows)
            return None
        cols = {}
        off = HEADER.size
        for name in COLUMNS:
            size = rows * DTYPES[name].itemsize
            cols[name] = record[off : off + size].view(DTYPES[name])
            off += size
        return Batch(**cols)

    # --- point lists ---------------------------------------------------------------------

    def use_points(self, points: Sequence[Point]) -> PointList:
        """Make `points` the list the indices of records appended from now on refer to.

        A spool without a generation (new, or written before generations existed) takes it
        for the records it already holds too."""
        labels = _labels(points)
        with self._lock:
            newest = self._generations[-1] if self._generations else None
            if newest is not None and _labels(newest.points) == labels:
                # The same list: the caller's points stand for it, as in a new spool, and
                # those read from its file go (a restarted gateway held every point twice:
                # ~20 MB at 50,000 points).
                self._generations[-1] = PointList(newest.first_seq, tuple(points))
                return self._generations[-1]
            first = self.last_seq + 1 if newest is not None else self.first_seq
            path = self.directory / f"points-{first:020d}.json"
            write_atomically(path, json.dumps(labels).encode(), durable=True)
            self._sync_directory()
            generation = PointList(first, tuple(points))
            if newest is not None and newest.first_seq == first:
                self._generations[-1] = generation  # no record was appended under it
            else:
                self._generations.append(generation)
            log.info("event=spool_point_list first_seq=%d points=%d", first, len(labels))
            return generation

    def points_for(self, seq: int) -> PointList | None:
        """The point list record `seq`'s indices refer to (None: the spool never had one)."""
        with self._lock:
            i = bisect_right([g.first_seq for g in self._generations], seq) - 1
            return self._generations[max(i, 0)] if self._generations else None

    def _generation_end(self, seq: int) -> int:
        """The last seq of the generation holding `seq` (unbounded for the newest)."""
        firsts = [g.first_seq for g in self._generations]
        i = bisect_right(firsts, seq)
        return firsts[i] - 1 if i < len(firsts) else 2**63

    def _prune_generations(self) -> None:
        """Delete the point lists no held record refers to any more."""
        while len(self._generations) > 1 and self._generations[1].first_seq <= self.first_seq:
            gen = self._generations.pop(0)
            (self.directory / f"points-{gen.first_seq:020d}.json").unlink(missing_ok=True)

    def backlog(self, seq: int) -> tuple[int, float]:
        """(readings after `seq`, age in seconds of the oldest of them) — a sink's backlog."""
        with self._lock:
            behind = [s for s in self._segments if s.count and s.last_seq > seq]
            readings = sum(s.rows_after(seq) for s in behind)
            seg = behind[0] if behind else None
            if seg is None:
                return 0, 0.0
            k = max(seq + 1 - seg.first_seq, 0)
            return readings, max(0.0, (time.time_ns() - seg.times[k]) / 1e9)

    # --- retention ---------------------------------------------------------------------

    def ack(self, sink: str, seq: int) -> None:
        """Record that `sink` has stored everything up to `seq`; persisted for retention."""
        if not SINK_NAME.match(sink):
            raise ValueError(f"spool: bad sink name {sink!r} (letters, digits, _ . - only)")
        with self._lock:
            self._write_cursor(sink, seq)
            self._cursors[sink] = seq
            acked = min(self._cursors.values())
            while len(self._segments) > 1 and self._segments[0].last_seq <= acked:
                seg = self._segments.pop(0)
                seg.path.unlink()
            self._prune_generations()
            now = time.time_ns()
            self._enforce_bounds(now)
            self._update_status(now)

    def _write_cursor(self, sink: str, seq: int) -> None:
        """Overwrite `<sink>.cursor` in place with a fixed-width number: rewriting one page
        costs the disk one write per writeback period, where a new file per ack cost one
        per ack (ext4 writes a file renamed over another at once). A write of 21 bytes
        within a page is whole or absent after a crash; a cursor lost to a power cut only
        means keeping more."""
        fd = self._cursor_fds.get(sink)
        if fd is None:
            fd = os.open(self.directory / f"{sink}.cursor", os.O_WRONLY | os.O_CREAT, 0o644)
            self._cursor_fds[sink] = fd
        os.pwrite(fd, f"{seq:020d}\n".encode(), 0)

    def acked(self, sink: str) -> int:
        """The last sequence number `sink` acknowledged (0 if never)."""
        with self._lock:
            return self._cursors.get(sink, 0)

    def _enforce_bounds(self, now: int) -> None:
        max_age_ns = int(self.settings.max_age * 1e9)
        while True:
            oldest = self._segments[0]
            if oldest.count == 0:
                return
            total = sum(s.size for s in self._segments)
            too_old = now - oldest.times[-1] > max_age_ns
            if total <= self.settings.max_bytes and not too_old:
                return
            if len(self._segments) == 1:
                self._roll()
            self._drop_oldest("age" if too_old else "size")

    def _drop_oldest(self, reason: str) -> None:
        seg = self._segments.pop(0)
        acked = min(self._cursors.values(), default=0)
        lost = seg.rows_after(acked)
        seg.path.unlink()
        self._prune_generations()
        if lost:
            self.status.readings_dropped_total += lost
            log.warning(
                "event=spool_drop reason=%s segment=%s seq=%d-%d readings=%d bytes=%d",
                reason, seg.path.name, max(seg.first_seq, acked + 1), seg.last_seq, lost,
                seg.size)

    def _update_status(self, now: int) -> None:
        self.status.bytes = sum(s.size for s in self._segments)
        self.status.batches = sum(s.count for s in self._segments)
        first = self._segments[0]
        self.status.oldest_age_seconds = (
            max(0.0, (now - first.times[0]) / 1e9) if first.count else 0.0)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            if self._held and not self._write_held(force=True):
                log.error("event=spool_drop reason=%s readings=%d: still held in memory at "
                          "shutdown, never written", self.status.cause,
                          self.status.held_readings)
                self.status.readings_lost_total += self.status.held_readings
            self._closed = True
            if self._dirty:
                self._sync()
            os.close(self._fd)
            for fd in self._cursor_fds.values():
                os.close(fd)
            os.close(self._lock_fd)
