"""The embedded historian: readings with quality in one SQLite file (WAL), stored in chunks.

A row per reading costs a whole core at 100k readings/s (NOTES.md), so readings are stored as
numpy columns in blobs, in two tables:

- `fresh`: what `store()` writes, one row per group of 256 tag ids per store (or per
  PART_READINGS of a group's readings in one store), sorted by (tag, source time). One store
  of readings from many tags is a handful of rows.
- `chunks`: one tag's readings, up to 4,096 per row, with the row's time range indexed.
  A background compaction (bounded work after each store) moves a group's fresh rows into
  per-tag chunks once the group has 1,024 rows or 256k readings (50,000 tags polled twice a
  second: ~1,000 readings per tag and chunk), and merges a tag's small chunks into big ones,
  so one tag's 1M readings are a few hundred rows. Moving late rewrites less; the price is
  that a query of recent readings may read up to 1,024 fresh rows of its group (~20 ms).

A query reads the tag's chunks and its group's fresh rows in one read transaction, so it sees
every reading exactly once while compaction moves them. `latest` keeps one row of arrays per
64 tag ids, rewritten when a store touches it. The spool cursor is stored in the same
transaction as the readings: after a crash the sink resumes from `cursor()`, exactly once.

Tag ids are persisted (`tags` table), new tags are appended: a config change never remaps the
stored history. `store()` takes the point list the batches' indices refer to (the spool's
generation), so a backlog spooled under an earlier list lands on the tags it was polled for.
One writer per file; readers may be other processes (`readonly=True`).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from anomaly.core.batch import Batch, Quality
from gateway.site.tag_index import TagIndex
from gateway.storage.spool import PointList, Record

log = logging.getLogger(__name__)

GROUP_SHIFT = 8  # 256 tag ids share a fresh row
# 16 tag ids share a latest row (592 bytes: within a 1 KiB page, no overflow pages), rewritten
# whenever a store touches one of them: a site of 25 tags rewrites one page per store, not
# 38 KB (files before kept 1,024 per row, `meta.latest_shift` absent, or 64; the writer
# converts them when it opens one).
LATEST_SHIFT = 4
LEGACY_LATEST_SHIFT = 10
CHUNK_MAX = 4096  # readings per chunk
SMALL = 512  # chunks below this many readings get merged
MERGE_FANIN = 8  # a tag's small chunks are merged once it has this many
MERGE_TAGS = 64  # tags merged per compaction step
FLUSH_ROWS = 1024  # a group's fresh rows are moved to chunks at this many rows...
FLUSH_READINGS = 1 << 18  # ...or this many readings
NO_TS = np.iinfo(np.int64).min  # latest: no reading yet
# What the gateway's drain hands the historian a store (one commit), `store_readings`.
STORE_READINGS = 100_000
STORE_POLLS = 5
# Readings a store sorts and packs at a time (~170 KB of columns): beside its batches a store
# holds the tags, the sort's indices and the batch of each reading (9 bytes a reading) and a
# part's columns gathered from the batches it has readings of, ~100 bytes a reading of the
# part. With the drain's records read by reference (their columns a part at a time), a commit
# of 50,000 readings of 10,000 tags peaks at 17 bytes a reading, 25 at 1 << 13, 71 with the
# records read whole (tracemalloc; the CPU of 1 << 13 within the noise at load 6). The fresh
# rows written are the same, but a group of more readings in one store (a backlog of a few
# tags) is written in rows of at most this many.
PART_READINGS = 1 << 12
WHOLE_BLOB = 16384  # bytes: a blob this small is read in one call, not column by column
# SQLite's page cache per connection, KiB: pinned, not left to how the linked library was built.
# The writer's hot pages are B-tree interiors and the `latest` rows it rewrites (~42 KB per
# 1,024 tags a store touches); blobs stream through the OS's page cache (a reader's mmap).
# Full within ~10 s at 10,000 points polled every second, then flat (the soak test).
CACHE_KIB = 2048
# SQLite's page in new files, bytes. A commit rewrites whole pages besides its readings (the
# `fresh` and index leaves and interiors, `latest`, the cursor, the header: ~6), each through
# the WAL and again at the checkpoint; at 4 KiB they were most of a small site's writes.
PAGE_SIZE = 1024
CHECKPOINT_BYTES = 64 << 20  # of WAL; as much as journal_size_limit keeps

# Blob layouts: 8-byte columns first, so every column is aligned within the blob.
CHUNK_COLUMNS = ("source_ts", "value", "server_ts", "gateway_ts", "cause", "quality")
FRESH_COLUMNS = ("source_ts", "value", "server_ts", "gateway_ts", "tag", "cause", "quality")
DTYPES: dict[str, np.dtype] = {**{k: np.dtype(v) for k, v in Batch.DTYPES.items()},
                               "tag": np.dtype(np.int32)}

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS tags(id INTEGER PRIMARY KEY, tag TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS fresh(id INTEGER PRIMARY KEY, grp INTEGER NOT NULL,
    t_min INTEGER NOT NULL, t_max INTEGER NOT NULL, n INTEGER NOT NULL, data BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS fresh_grp ON fresh(grp, t_max, t_min);
CREATE TABLE IF NOT EXISTS chunks(id INTEGER PRIMARY KEY, tag INTEGER NOT NULL,
    t_min INTEGER NOT NULL, t_max INTEGER NOT NULL, n INTEGER NOT NULL, data BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_tag ON chunks(tag, t_max, t_min);
CREATE INDEX IF NOT EXISTS chunks_small ON chunks(tag, t_min) WHERE n < {SMALL};
CREATE TABLE IF NOT EXISTS latest(block INTEGER PRIMARY KEY, data BLOB NOT NULL);
"""

Columns = dict[str, np.ndarray]
# Per blob layout: bytes per row before each column (times n: where the column starts), and
# under "" the bytes of a whole row.
_OFFSETS: dict[Sequence[str], dict[str, int]] = {
    layout: {**{k: sum(DTYPES[c].itemsize for c in layout[:i]) for i, k in enumerate(layout)},
             "": sum(DTYPES[c].itemsize for c in layout)}
    for layout in (CHUNK_COLUMNS, FRESH_COLUMNS)}


class HistorianError(Exception):
    """The historian file cannot be opened or used."""


@dataclass(frozen=True, slots=True)
class Buckets:
    """Aggregates of one tag per time bucket, over good and uncertain readings only.

    Buckets are aligned to multiples of the width since the Unix epoch; `start` is each
    bucket's start (int64 ns). Buckets without such a reading are omitted.
    """

    start: np.ndarray
    count: np.ndarray
    mean: np.ndarray
    min: np.ndarray
    max: np.ndarray
    first: np.ndarray
    last: np.ndarray

    def __len__(self) -> int:
        return len(self.start)


class HistorianReader(Protocol):
    """What the API reads from a historian (embedded here; InfluxDB implements it too).

    Times are int64 ns since the epoch; ranges are [start_ns, end_ns). `point` in the returned
    batches is the tag's position in the tag list the reader was opened with.
    """

    def latest(self, tags: Sequence[str] | None = None) -> Batch: ...

    def history(self, tag: str, start_ns: int, end_ns: int, limit: int | None = None) -> Batch:
        ...

    def buckets(self, tag: str, start_ns: int, end_ns: int, width_ns: int) -> Buckets: ...


def _pack(cols: Columns, names: Sequence[str], a: int, b: int) -> bytes:
    """Rows [a, b) of columns `names` (already of their dtypes), one after the other."""
    return b"".join([cols[k][a:b].data.cast("B") for k in names])


def _unpack(blob: bytes, n: int, names: Sequence[str]) -> Columns:
    out, off = {}, 0
    for k in names:
        out[k] = np.frombuffer(blob, DTYPES[k], n, off)
        off += n * DTYPES[k].itemsize
    return out


def _read_part(blob: sqlite3.Blob, layout: Sequence[str], names: Sequence[str],
               tag_id: int | None, start_ns: int, end_ns: int) -> Columns:
    """Columns `names` of the rows of a blob laid out as `layout` whose source time is in
    [start_ns, end_ns) (and whose tag is `tag_id`, for a fresh row).

    A small blob is read whole; of a big one, only the slices needed.
    """
    offset = _OFFSETS[layout]
    size = len(blob)
    n = size // offset[""]
    whole = blob.read() if size <= WHOLE_BLOB else None

    def column(name: str, a: int, b: int) -> np.ndarray:
        width = DTYPES[name].itemsize
        start = offset[name] * n + a * width
        if whole is not None:
            return np.frombuffer(whole, DTYPES[name], b - a, start)
        blob.seek(start)
        return np.frombuffer(blob.read((b - a) * width), DTYPES[name])

    a, b = 0, n
    if tag_id is not None:
        a, b = np.searchsorted(column("tag", 0, n), [tag_id, tag_id + 1]).tolist()
    ts = column("source_ts", a, b)
    lo, hi = np.searchsorted(ts, [start_ns, end_ns]).tolist()
    return {k: ts[lo:hi] if k == "source_ts" else column(k, a + lo, a + hi) for k in names}


def _concat(parts: list[Columns], names: Sequence[str]) -> Columns:
    if not parts:
        return {k: np.empty(0, DTYPES[k]) for k in names}
    return {k: np.concatenate([p[k] for p in parts]) for k in names}


def _take(cols: Columns, index: np.ndarray) -> Columns:
    return {k: v[index] for k, v in cols.items()}


def _runs(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end of each run of equal values in sorted `keys`."""
    cuts = np.flatnonzero(keys[1:] != keys[:-1]) + 1
    return np.r_[0, cuts], np.r_[cuts, len(keys)]


def _pieces(a: int, b: int, most: int = CHUNK_MAX) -> list[tuple[int, int]]:
    """[a, b) cut into nearly equal pieces of at most `most` (as Python ints: SQLite would
    store numpy integers as blobs)."""
    a, b = int(a), int(b)
    if b <= a:
        return []
    k = -(-(b - a) // most)
    edges = [a + (b - a) * i // k for i in range(k + 1)]
    return list(itertools.pairwise(edges))


def _parts(groups: np.ndarray) -> list[list[tuple[int, int]]]:
    """The fresh rows of a store whose readings, sorted, are of `groups`: a row a group (a
    group of more than PART_READINGS readings cut into pieces of at most that many), as
    [a, b) of the sorted readings, put together in parts of whole rows of at most
    PART_READINGS readings each, in order."""
    parts: list[list[tuple[int, int]]] = []
    size = PART_READINGS
    for a, b in zip(*_runs(groups), strict=True):
        for lo, hi in _pieces(a, b, PART_READINGS):
            if size + hi - lo > PART_READINGS:
                parts.append([])
                size = 0
            parts[-1].append((lo, hi))
            size += hi - lo
    return parts


def _column(batch: Batch | Record, name: str) -> np.ndarray:
    return batch.column(name) if isinstance(batch, Record) else getattr(batch, name)


def _gathered(batches: list[Batch | Record], pieces: list[tuple[int, np.ndarray]],
              within: np.ndarray, name: str) -> np.ndarray:
    """Column `name` of readings `within` their batches, from each batch `k` at the readings'
    positions `at` of each (k, at) of `pieces` (one column of a batch held at a time)."""
    out = np.empty(len(within), DTYPES[name])
    for k, at in pieces:
        out[at] = _column(batches[k], name)[within[at]]
    return out


def store_readings(tags: int) -> int:
    """Readings a store (one commit) of a site of `tags` takes at most: its spool read holds
    them all at once (41 bytes each, beside the store's own peak), and each commit rewrites
    the `latest` rows of every tag it has (37 bytes a tag). STORE_READINGS // 2, but
    STORE_POLLS polls of every tag up to STORE_READINGS: 10,000 tags polled every second
    commit a 10-s flush in two, 50,000 readings (RSS +3 MB for it, not +6: the aim is 100 MB),
    for ~4 % more bytes written over a reading's life (bench.disk_writes' lifetime: 244 ->
    254 bytes a reading); 50,000 tags keep 100,000 (half would write 15 % more)."""
    return min(STORE_READINGS, max(STORE_READINGS // 2, STORE_POLLS * tags))


def _latest_shift(db: sqlite3.Connection) -> int:
    """log2 of the tag ids per `latest` row in this file."""
    row = db.execute("SELECT value FROM meta WHERE key = 'latest_shift'").fetchone()
    return row[0] if row else LEGACY_LATEST_SHIFT


def _rollback(db: sqlite3.Connection) -> None:
    """Roll back the transaction if SQLite has not already: it does so by itself after some
    errors (a full disk), and a ROLLBACK then would raise and hide the error that led here."""
    if db.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")


def _connect(path: Path, readonly: bool) -> sqlite3.Connection:
    try:
        if readonly:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("SELECT 1 FROM meta LIMIT 1")
            # Blob reads straight from the mapped file: about half the CPU of read() calls.
            conn.execute("PRAGMA mmap_size=268435456")
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            # Only a new file takes it (WAL mode fixes the size of an existing one).
            conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            # Debian's SQLite zeroes freed pages (SECURE_DELETE): a page every commit for the
            # `latest` rows replaced, and every fresh row moved into chunks written once more.
            # Readings are no secret a copy must hide; FAST only clears within pages written.
            conn.execute("PRAGMA secure_delete=FAST")
            conn.execute("PRAGMA journal_size_limit=67108864")
            # A checkpoint copies each page once however many commits rewrote it (`latest`,
            # the cursor, index leaves): one per CHECKPOINT_BYTES of WAL, not SQLite's 1,000
            # pages, costs a small site's SD card ~15% fewer bytes (bench.disk_writes).
            page = conn.execute("PRAGMA page_size").fetchone()[0]
            conn.execute(f"PRAGMA wal_autocheckpoint={CHECKPOINT_BYTES // page}")
            conn.executescript(SCHEMA)
    except sqlite3.Error as e:
        raise HistorianError(f"{path}: cannot open the historian: {e}") from None
    conn.execute("PRAGMA busy_timeout=10000")
    conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
    return conn


class EmbeddedHistorian:
    """The SQLite historian: a spool sink (`cursor`, `store`) and a `HistorianReader`.

    `tags` are the site's tags in point order: a batch's `point` indexes them, and readers
    report positions in them.
    """

    name = "historian"

    def __init__(self, path: Path, tags: Sequence[str], *, readonly: bool = False) -> None:
        self.path = Path(path)
        self.tags = list(tags)
        self.readonly = readonly
        self._read_lock = threading.Lock()
        self._read: sqlite3.Connection | None = None
        self._top_id = -1
        if readonly:
            self._read = _connect(self.path, readonly=True)
            self._load_ids(self._read)
            return
        self._write_lock = threading.Lock()
        self._write = _connect(self.path, readonly=False)
        self._open_writer()

    # --- writer state ------------------------------------------------------------------

    def _open_writer(self) -> None:
        db = self._write
        self._point_ids = self._register(self.tags)
        self._generation_ids: dict[int, np.ndarray] = {}  # PointList.first_seq -> tag ids
        row = db.execute("SELECT value FROM meta WHERE key = 'cursor'").fetchone()
        self._cursor = row[0] if row else 0
        row = db.execute("SELECT value FROM meta WHERE key = 'sender'").fetchone()
        self._sender: str | None = row[0] if row else None
        self._fresh: dict[int, list[int]] = {  # group -> [rows, readings]
            g: [r, n] for g, r, n in db.execute(
                "SELECT grp, count(*), sum(n) FROM fresh GROUP BY grp")}
        self._due = {g for g, (r, n) in self._fresh.items()
                     if r >= FLUSH_ROWS or n >= FLUSH_READINGS}
        self._small = np.zeros(self._capacity(), np.int64)  # small chunks per tag id
        for tag, count in db.execute(
                f"SELECT tag, count(*) FROM chunks WHERE n < {SMALL} GROUP BY tag"):
            self._small[tag] = count
        shift, stored = self._load_latest(db)
        if shift != LATEST_SHIFT or not stored:
            # A file of an earlier layout (or a new one): latest in today's rows.
            blocks = np.flatnonzero(self._latest["source_ts"] != NO_TS) >> LATEST_SHIFT
            try:
                db.execute("BEGIN IMMEDIATE")
                db.execute("DELETE FROM latest")
                db.executemany("INSERT INTO latest(block, data) VALUES (?, ?)",
                               self._latest_rows(np.unique(blocks).tolist()))
                db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('latest_shift', ?)",
                           (LATEST_SHIFT,))
                db.execute("COMMIT")
            except sqlite3.Error as e:
                _rollback(db)
                raise HistorianError(f"{self.path}: cannot convert latest: {e}") from None

    def _load_latest(self, db: sqlite3.Connection) -> tuple[int, bool]:
        """Read the `latest` table into the latest arrays: what the last commit left (a store
        updates the arrays before its commit, so one that fails leaves them to be read anew).
        Returns the file's log2 of tag ids per row and whether it had any row."""
        self._latest = self._empty_latest(self._capacity())
        self._latest_stale = False
        shift = _latest_shift(db)
        stored = False
        for block, data in db.execute("SELECT block, data FROM latest"):
            a = block << shift
            for k, v in _unpack(data, 1 << shift, CHUNK_COLUMNS).items():
                self._latest[k][a : a + len(v)] = v[: len(self._latest[k]) - a]
            stored = True
        return shift, stored

    @functools.cached_property
    def _position(self) -> TagIndex:
        """Tag -> position in `tags`: for readers only."""
        return TagIndex(self.tags)

    def _load_ids(self, db: sqlite3.Connection) -> None:
        """(Re)read our tags' ids if tags were added since: the writer may be another process.
        No tag -> id dict is kept: 50,000 tags would hold ~13 MB."""
        top = db.execute("SELECT coalesce(max(id), 0) FROM tags").fetchone()[0]
        if top != self._top_id:
            self._our_ids = self._ids_in(db, self.tags).astype(np.int64)
            self._top_id = top

    @staticmethod
    def _ids_in(db: sqlite3.Connection, tags: Sequence[str]) -> np.ndarray:
        """The stored ids of `tags` (int32, in their order), -1 where never stored."""
        position = {tag: i for i, tag in enumerate(tags)}
        ids = np.full(len(tags), -1, np.int32)
        for tag, id_ in db.execute("SELECT tag, id FROM tags"):
            if (i := position.get(tag)) is not None:
                ids[i] = id_
        return ids

    def _register(self, tags: Sequence[str]) -> np.ndarray:
        """Ids of `tags` (int32, in their order), adding the ones never seen."""
        db = self._write
        db.execute("BEGIN IMMEDIATE")
        db.executemany("INSERT OR IGNORE INTO tags(tag) VALUES (?)", [(t,) for t in tags])
        db.execute("COMMIT")
        self._load_ids(db)
        return self._ids_in(db, tags)

    def _ids_of(self, points: PointList | None) -> np.ndarray:
        """Tag ids indexed like the `point` column of batches spooled under `points`."""
        if points is None:
            return self._point_ids
        ids = self._generation_ids.get(points.first_seq)
        if ids is None:
            ids = self._generation_ids[points.first_seq] = self._register(points.tags)
            capacity = self._capacity()
            if len(self._small) < capacity:  # tags of an older list, new to this file
                self._small = np.r_[self._small, np.zeros(capacity - len(self._small), np.int64)]
                latest = self._empty_latest(capacity)
                for k, v in self._latest.items():
                    latest[k][: len(v)] = v
                self._latest = latest
        return ids

    def _capacity(self) -> int:
        return -(-(self._top_id + 1) >> LATEST_SHIFT) << LATEST_SHIFT

    @staticmethod
    def _empty_latest(n: int) -> Columns:
        cols = {k: np.zeros(n, DTYPES[k]) for k in CHUNK_COLUMNS}
        cols["source_ts"][:] = NO_TS
        cols["value"][:] = np.nan
        cols["quality"][:] = Quality.BAD
        return cols

    # --- sink --------------------------------------------------------------------------

    def cursor(self) -> int:
        """The last spool sequence number stored (0 if none)."""
        if self.readonly:
            with self._read_lock:
                row = self._reader().execute("SELECT value FROM meta WHERE key='cursor'").fetchone()
            return row[0] if row else 0
        return self._cursor

    def sender(self) -> str | None:
        """What the last store's `sender` said (None if none did)."""
        return self._sender

    def store(self, entries: Sequence[tuple[int, Batch | Record]],
              points: PointList | None = None, *,
              sender: str | None = None) -> None:
        """Store spooled batches and the cursor (their last seq) in one transaction.

        Records by reference (`Spool.read_records_after`, the gateway's drain) have their
        columns read a part at a time as the store packs them: the commit's readings are
        not held whole beside the store (issue 17).

        `points`: the list the batches' point indices refer to (None: this historian's
        tags). Entries at or below the cursor are already stored and are skipped. `sender`:
        the writer's own record of what it has stored (the central's per-site progress, where
        readings arrive out of order), committed with them so a crash cannot part the two.
        """
        if self.readonly:
            raise HistorianError(f"{self.path}: opened read-only")
        with self._write_lock:
            entries = [(seq, b) for seq, b in entries if seq > self._cursor]
            if not entries:
                return
            self._store([b for _, b in entries], max(s for s, _ in entries),
                        self._ids_of(points), sender)
            budget = 4 * sum(len(b) for _, b in entries) + FLUSH_READINGS
            try:
                while budget > 0:
                    done = self._compact_step()
                    if not done:
                        break
                    budget -= done
            except sqlite3.Error:
                # The readings are committed; compaction retries after the next store.
                log.exception("event=historian_compaction_error path=%s", self.path)

    def _store(self, batches: list[Batch | Record], cursor: int, point_ids: np.ndarray,
               sender: str | None = None) -> None:
        if self._latest_stale:  # a failed store updated the arrays: read what was committed
            try:
                self._load_latest(self._write)
            except sqlite3.Error as e:
                raise HistorianError(f"{self.path}: cannot read latest: {e}") from e
        point = np.concatenate([_column(b, "point") for b in batches])
        known = (point >= 0) & (point < len(point_ids))
        keep: np.ndarray | None = None
        if not known.all():
            log.error("event=historian_unknown_point readings=%d points=%s",
                      int((~known).sum()), np.unique(point[~known])[:10].tolist())
            keep = np.flatnonzero(known)
        del known
        tag = point_ids[point if keep is None else point[keep]]
        del point
        # Sorted by tag here, by (tag, time) a part at a time below: only the tags and the
        # sort's indices are held for all readings, the columns are joined, sorted and packed
        # PART_READINGS at a time. Sorted whole, 100,000 readings of 50,000 tags held 86
        # bytes a reading beside the batches (the sorted copy, and the latest values kept to
        # undo a failed commit): a 50,000-tag gateway's RSS +11 MB at every commit.
        order = np.argsort(tag, kind="stable").astype(np.int32)
        tag = tag[order]
        if keep is not None:
            order = keep.astype(np.int32)[order]  # positions in the joined batches
        del keep
        sizes = [len(b) for b in batches]
        starts = np.cumsum([0, *sizes[:-1]])  # of each batch, joined
        of_batch = np.repeat(np.arange(len(batches), dtype=np.min_scalar_type(len(batches))),
                             sizes)  # the batch of each reading (a byte each below 256 batches)
        del sizes
        parts = _parts(tag >> GROUP_SHIFT)
        rows: list[tuple[int, int]] = []  # (group, readings) of each fresh row
        blocks: list[np.ndarray] = []  # the latest rows each part changed

        def fresh_rows() -> Iterator[tuple[int, int, int, int, bytes]]:
            """Each part's rows, packed as SQLite asks for them (held all at once, 10 s of
            50,000 tags, ~90 KB a group, took 17 MB of heap that stayed until the next
            hand-back, gateway/memory.py); the latest arrays updated part by part, so a
            failure leaves them to be read anew (`_latest_stale`)."""
            for part in parts:
                a, b = part[0][0], part[-1][1]
                # Gathered from each batch the part has readings of, a column at a time:
                # the drain's records, read by reference, are read a column at a time and
                # let go (a part's batches joined whole held 4-5 times the part: 0.5 MB).
                index = order[a:b]
                which = of_batch[index]
                within = (index - starts[which]).astype(np.int32)  # its position in its batch
                by = np.argsort(which, kind="stable").astype(np.int32)
                pieces = [(int(which[by[i]]), by[i:j]) for i, j in zip(*_runs(which[by]),
                                                                        strict=True)]
                del index, which, by
                ts = _gathered(batches, pieces, within, "source_ts")
                sort = np.lexsort((ts, tag[a:b]))
                cols = {k: (ts if k == "source_ts" else _gathered(batches, pieces, within, k))[sort]
                        for k in CHUNK_COLUMNS}
                del within, pieces, ts, sort
                cols["tag"] = tag[a:b]
                blocks.append(np.unique(self._latest_update(cols) >> LATEST_SHIFT))
                ts = cols["source_ts"]
                for lo, hi in part:
                    g, n = int(tag[lo]) >> GROUP_SHIFT, hi - lo
                    rows.append((g, n))
                    yield (g, int(ts[lo - a : hi - a].min()), int(ts[lo - a : hi - a].max()), n,
                           _pack(cols, FRESH_COLUMNS, lo - a, hi - a))

        db = self._write
        try:
            db.execute("BEGIN IMMEDIATE")
            db.executemany(
                "INSERT INTO fresh(grp, t_min, t_max, n, data) VALUES (?, ?, ?, ?, ?)",
                fresh_rows())
            db.executemany(
                "INSERT OR REPLACE INTO latest(block, data) VALUES (?, ?)",
                self._latest_rows(np.unique(np.concatenate(blocks)).tolist() if blocks else []))
            # An update in place: a REPLACE would rewrite the key's index page as well.
            db.execute("INSERT INTO meta(key, value) VALUES ('cursor', ?) "
                       "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (cursor,))
            if sender is not None:  # text in the INTEGER column: SQLite keeps it as given
                db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('sender', ?)",
                           (sender,))
            db.execute("COMMIT")
        except BaseException as e:
            self._latest_stale = True
            _rollback(db)
            if isinstance(e, sqlite3.Error):
                raise HistorianError(f"{self.path}: cannot store {len(tag)} readings: "
                                     f"{e}") from e
            raise
        self._cursor = cursor
        if sender is not None:
            self._sender = sender
        for g, n in rows:
            stats = self._fresh.setdefault(g, [0, 0])
            stats[0] += 1
            stats[1] += n
            if stats[0] >= FLUSH_ROWS or stats[1] >= FLUSH_READINGS:
                self._due.add(g)

    def _latest_rows(self, blocks: list[int]) -> Iterator[tuple[int, bytes]]:
        """The `latest` rows `blocks`, packed as SQLite asks for them (held all at once,
        50,000 tags' 3,125 rows were 2.2 MB)."""
        latest = self._latest
        for b in blocks:
            yield b, _pack(latest, CHUNK_COLUMNS, b << LATEST_SHIFT, (b + 1) << LATEST_SHIFT)

    def _latest_update(self, cols: Columns) -> np.ndarray:
        """Apply `cols` (sorted by tag, time) to the latest arrays; return the tag ids changed.

        A reading replaces the latest only if it is not older: late data never hides newer.
        """
        latest = self._latest
        if not len(cols["tag"]):
            return np.empty(0, np.int64)
        last = _runs(cols["tag"])[1] - 1
        ids = cols["tag"][last].astype(np.int64)
        newer = cols["source_ts"][last] >= latest["source_ts"][ids]
        ids, last = ids[newer], last[newer]
        for k in CHUNK_COLUMNS:
            latest[k][ids] = cols[k][last]
        return ids

    # --- compaction --------------------------------------------------------------------

    def compact(self, full: bool = False) -> bool:
        """Run one bounded compaction step; False once there is nothing left to do.

        Stores compact as they go; `full` also moves groups and merges tags that are below
        the thresholds, leaving every tag in as few chunks as possible.
        """
        with self._write_lock:
            return self._compact_step(full) > 0

    def _compact_step(self, full: bool = False) -> int:
        """Move one due group from `fresh` into chunks, and merge some tags' small chunks.
        Returns the readings rewritten (0: nothing was due)."""
        done = 0
        due = self._fresh if full else self._due
        if due:
            done += self._flush(max(due, key=lambda g: self._fresh[g][1]))
        tags = np.flatnonzero(self._small >= (2 if full else MERGE_FANIN))[:MERGE_TAGS]
        if len(tags):
            done += self._merge(tags.tolist())
        return done

    def _flush(self, grp: int) -> int:
        """Move everything of group `grp` from `fresh` into per-tag chunks (one transaction).

        The rows' readings are read into columns as the rows come (not every blob held, then
        joined) and sorted a column at a time: a group's 256k readings held 131 bytes a
        reading at the peak, 34 MB for a moment, every group every ~17 min at 10,000 tags
        polled every second; now ~57 (the columns, one sorted column and the sort's
        indices)."""
        db = self._write
        db.execute("BEGIN IMMEDIATE")
        try:
            total, ids = 0, []
            for rowid, n in db.execute("SELECT id, n FROM fresh WHERE grp = ?", (grp,)):
                ids.append((rowid,))
                total += n
            cols = {k: np.empty(total, DTYPES[k]) for k in FRESH_COLUMNS}
            at = 0
            for n, data in db.execute("SELECT n, data FROM fresh WHERE grp = ? ORDER BY id",
                                      (grp,)):
                for k, v in _unpack(data, n, FRESH_COLUMNS).items():
                    cols[k][at : at + n] = v
                at += n
            order = np.lexsort((cols["source_ts"], cols["tag"]))
            for k in FRESH_COLUMNS:  # a column at a time: one sorted copy at once
                cols[k] = cols[k][order]
            del order
            db.executemany("DELETE FROM fresh WHERE id = ?", ids)
            sizes: list[tuple[int, int]] = []  # (tag, readings) of each chunk

            def chunks() -> Iterator[tuple]:
                """Packed as SQLite asks for them, as the store's fresh rows are."""
                for a, b in zip(*_runs(cols["tag"]), strict=True):
                    for row in self._chunk_rows(int(cols["tag"][a]), cols, a, b):
                        sizes.append((row[0], row[3]))
                        yield row

            db.executemany(
                "INSERT INTO chunks(tag, t_min, t_max, n, data) VALUES (?, ?, ?, ?, ?)",
                chunks())
            db.execute("COMMIT")
        except BaseException:
            _rollback(db)
            raise
        del self._fresh[grp]
        self._due.discard(grp)
        for tag, n in sizes:
            self._small[tag] += n < SMALL
        return total

    def _merge(self, tags: list[int]) -> int:
        """Merge each tag's small chunks (up to 64) into as few big ones as fit."""
        db = self._write
        done = 0
        small = {}
        db.execute("BEGIN IMMEDIATE")
        try:
            for tag in tags:
                rows = db.execute(
                    f"SELECT id, n, data FROM chunks WHERE tag = ? AND n < {SMALL} "
                    "ORDER BY t_min LIMIT 64", (tag,)).fetchall()
                cols = _concat([_unpack(data, n, CHUNK_COLUMNS) for _, n, data in rows],
                               CHUNK_COLUMNS)
                cols = _take(cols, np.argsort(cols["source_ts"], kind="stable"))
                db.executemany("DELETE FROM chunks WHERE id = ?", [(r[0],) for r in rows])
                db.executemany(
                    "INSERT INTO chunks(tag, t_min, t_max, n, data) VALUES (?, ?, ?, ?, ?)",
                    self._chunk_rows(tag, cols, 0, len(cols["source_ts"])))
                # Counted afresh rather than adjusted, so a miscount cannot loop forever.
                small[tag] = db.execute(
                    f"SELECT count(*) FROM chunks WHERE tag = ? AND n < {SMALL}", (tag,)
                ).fetchone()[0]
                done += len(cols["source_ts"])
            db.execute("COMMIT")
        except BaseException:
            _rollback(db)
            raise
        for tag, count in small.items():
            self._small[tag] = count
        return done

    def _chunk_rows(self, tag: int, cols: Columns, a: int, b: int) -> list[tuple]:
        ts = cols["source_ts"]
        return [(tag, int(ts[lo]), int(ts[hi - 1]), hi - lo, _pack(cols, CHUNK_COLUMNS, lo, hi))
                for lo, hi in _pieces(a, b)]

    # --- reader ------------------------------------------------------------------------

    def _reader(self) -> sqlite3.Connection:
        if self._read is None:
            self._read = _connect(self.path, readonly=True)
        return self._read

    def _tag_id(self, tag: str) -> int | None:
        """The stored id of `tag`; None if it is one of ours but nothing was stored yet."""
        row = self._reader().execute("SELECT id FROM tags WHERE tag = ?", (tag,)).fetchone()
        if row is None and tag not in self._position:
            raise KeyError(f"unknown tag {tag!r}")
        return None if row is None else row[0]

    def latest(self, tags: Sequence[str] | None = None) -> Batch:
        """The newest reading of each tag (all reader tags if None) that has one."""
        if tags is None:
            points = np.arange(len(self.tags))
        else:
            unknown = [t for t in tags if t not in self._position]
            if unknown:
                raise KeyError(f"unknown tag {unknown[0]!r}")
            points = np.array([self._position[t] for t in tags], np.int64)
        with self._read_lock:
            db = self._reader()
            if (self._our_ids[points] < 0).any():
                self._load_ids(db)
            ids = self._our_ids[points]
            points, ids = points[ids >= 0], ids[ids >= 0]
            db.execute("BEGIN")  # the layout and the rows of one moment
            try:
                shift = _latest_shift(db)
                blocks = np.unique(ids >> shift).tolist()
                rows = db.execute(
                    f"SELECT block, data FROM latest WHERE block IN "
                    f"({','.join('?' * len(blocks))})", blocks).fetchall() if blocks else []
            finally:
                db.execute("COMMIT")
        width = 1 << shift
        table = self._empty_latest(width * (max(blocks, default=-1) + 1))
        for block, data in rows:
            for k, v in _unpack(data, width, CHUNK_COLUMNS).items():
                table[k][block * width : (block + 1) * width] = v
        cols = _take(table, ids)
        has = cols["source_ts"] != NO_TS
        return Batch(point=points[has].astype(np.int32), **{k: v[has] for k, v in cols.items()})

    def _read_range(self, tag: str, start_ns: int, end_ns: int,
                    names: Sequence[str] = CHUNK_COLUMNS, limit: int | None = None
                    ) -> tuple[int, Columns]:
        """(point, columns `names`) of `tag`'s readings in [start_ns, end_ns), oldest first;
        with a `limit`, at least its first `limit` readings.

        Blobs are read in part (incremental blob I/O): only the columns asked for, and from a
        fresh row only the tag's slice.
        """
        parts = []
        with self._read_lock:
            tag_id = self._tag_id(tag)
            if tag_id is None:
                return self._position[tag], _concat([], names)
            db = self._reader()
            # One read transaction: compaction moving readings cannot hide or double them.
            db.execute("BEGIN")
            try:
                chunks = db.execute(
                    "SELECT id, t_min, t_max FROM chunks WHERE tag = ? AND t_max >= ? "
                    "AND t_min < ? ORDER BY t_min", (tag_id, start_ns, end_ns)).fetchall()
                count, newest = 0, start_ns
                for rowid, t_min, t_max in chunks:
                    if limit is not None and count >= limit and t_min > newest:
                        break  # this chunk and those after hold only later readings
                    with db.blobopen("chunks", "data", rowid, readonly=True) as blob:
                        parts.append(_read_part(blob, CHUNK_COLUMNS, names, None,
                                                start_ns, end_ns))
                    count += len(parts[-1]["source_ts"])
                    newest = max(newest, t_max)
                fresh = db.execute(
                    "SELECT id FROM fresh WHERE grp = ? AND t_max >= ? AND t_min < ? "
                    "ORDER BY id", (tag_id >> GROUP_SHIFT, start_ns, end_ns)).fetchall()
                for (rowid,) in fresh:
                    with db.blobopen("fresh", "data", rowid, readonly=True) as blob:
                        parts.append(_read_part(blob, FRESH_COLUMNS, names, tag_id,
                                                start_ns, end_ns))
            finally:
                db.execute("COMMIT")
        cols = _concat(parts, names)
        ts = cols["source_ts"]
        if len(ts) > 1 and (ts[1:] < ts[:-1]).any():  # chunks may overlap (late data)
            cols = _take(cols, np.argsort(ts, kind="stable"))
        return self._position.get(tag, -1), cols

    def history(self, tag: str, start_ns: int, end_ns: int, limit: int | None = None) -> Batch:
        """`tag`'s raw readings in [start_ns, end_ns), oldest first, at most `limit`."""
        point, cols = self._read_range(tag, start_ns, end_ns, limit=limit)
        if limit is not None:
            cols = {k: v[:limit] for k, v in cols.items()}
        return Batch(point=np.full(len(cols["source_ts"]), point, np.int32), **cols)

    def buckets(self, tag: str, start_ns: int, end_ns: int, width_ns: int) -> Buckets:
        """`tag`'s good and uncertain readings in [start_ns, end_ns), aggregated per bucket."""
        if width_ns <= 0:
            raise ValueError(f"bucket width must be positive, got {width_ns} ns")
        _, cols = self._read_range(tag, start_ns, end_ns, ("source_ts", "value", "quality"))
        ts, value = cols["source_ts"], cols["value"]
        usable = cols["quality"] != Quality.BAD
        if not usable.all():
            ts, value = ts[usable], value[usable]
        if not len(ts):
            empty = np.empty(0)
            return Buckets(np.empty(0, np.int64), np.empty(0, np.int64), *[empty] * 5)
        bucket = ts // width_ns
        starts, ends = _runs(bucket)
        count = ends - starts
        return Buckets(
            start=bucket[starts] * width_ns,
            count=count,
            mean=np.add.reduceat(value, starts) / count,
            min=np.minimum.reduceat(value, starts),
            max=np.maximum.reduceat(value, starts),
            first=value[starts],
            last=value[ends - 1],
        )

    def close(self) -> None:
        if self._read is not None:
            self._read.close()
        if not self.readonly:
            with self._write_lock:
                self._write.close()
