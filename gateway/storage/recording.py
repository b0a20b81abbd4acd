"""Recordings: DESIGN.md's wide CSV of readings, read into `Batch`es in chunks, and written.

A recording is `timestamp` (ISO 8601; naive means UTC, offsets accepted) then one column per
tag; an empty cell is a missing reading (no reading at all), a `nan` (or `inf`) cell a bad
reading (a read that failed: no value; counted). The engine tells the two apart as it does
live (process detectors ignore both, but `comms` takes a failed read as an outage at once and
silence only after missed readings), so the gateway's recordings write its bad and uncertain
readings as `nan`, and a replay of what it stored gives its live alarms. Everything else that
is not a number is an error naming the row (as a spreadsheet shows it: the header is row 1)
and the column, as are an unknown column, rows out of time order and repeated timestamps,
times outside 1970-01-01 to 2262-04-11 (int64 nanoseconds hold no others), a cell over the
csv module's 131,072 characters and a row over MAX_ROW_BYTES (refused before it is held).

Files of hundreds of MB are read in chunks of lines, parsed by numpy's C CSV parser (no
Python object per cell); a chunk that the fast path cannot take as is (an irregular row, a
time offset, a cell that is not a number) is parsed again row by row, which either reads it
or finds the row and column at fault. `.csv.gz` files and `scadawatch simulate --export`
directories (their `readings.csv`) are read too.
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import re
import warnings
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import numpy as np

from anomaly.core.batch import Batch, Quality
from gateway.site.suggest import did_you_mean
from gateway.storage.historian import HistorianReader

READINGS = "readings.csv"
CHUNK_BYTES = 4 << 20  # ~25k rows of 25 tags: a few MB of arrays per batch
# A row holds at most this much (100,000 tags of 40 characters): a longer one is refused
# before it is read whole, so no file can take the reader's memory.
MAX_ROW_BYTES = 4 << 20
_STAMP_WIDTH = 48  # longest timestamp the fast path holds; longer ones go row by row
_GZIP_MAGIC = b"\x1f\x8b"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Times a recording may hold: int64 nanoseconds from 1970 (earlier is no SCADA recording).
LAST_NS = np.iinfo(np.int64).max  # 2262-04-11T23:47:16.854775807Z
FIRST_YEAR, LAST_YEAR = 1970, 2262  # the fast path takes [FIRST_YEAR, LAST_YEAR) whole
TIME_RANGE = "1970-01-01T00:00:00Z to 2262-04-11T23:47:16Z"
_ROW_FORMAT_NAN = re.compile(r"(?<=,)nan(?=,|$)", re.MULTILINE)
_ROW_FORMAT_INF = re.compile(r"(?<=,)inf(?=,|$)", re.MULTILINE)


class RecordingError(ValueError):
    """A recording that cannot be read, naming the file, the row and the column at fault."""

    def __init__(self, path: Path | str, reason: str, *, row: int | None = None,
                 column: str | None = None) -> None:
        self.path, self.reason, self.row, self.column = str(path), reason, row, column
        where = ", ".join(([f"row {row}"] if row is not None else [])
                          + ([f"column {column}"] if column is not None else []))
        super().__init__(f"{path}: {where}: {reason}" if where else f"{path}: {reason}")


@dataclass
class ReadStats:
    """What a reader has read so far."""

    rows: int = 0
    cells: int = 0  # rows x tag columns: the tag-samples of the recording
    readings: int = 0  # cells with a finite value
    empty: int = 0  # empty cells: no reading
    bad: int = 0  # nan / inf cells: bad readings (a failed read, no value)
    first_ns: int | None = None
    last_ns: int | None = None


def resolve(path: Path | str) -> Path:
    """The CSV a path names: itself, or a directory's `readings.csv` (or `.csv.gz`)."""
    path = Path(path)
    if path.is_dir():
        for name in (READINGS, READINGS + ".gz"):
            if (path / name).is_file():
                return path / name
        raise RecordingError(path, f"a directory without {READINGS} (or {READINGS}.gz)")
    if not path.exists():
        raise RecordingError(path, "no such file or directory")
    return path


class RecordingReader:
    """Batches of readings from a recording, one per chunk of rows, in time order: good ones,
    and bad ones (quality BAD, value NaN) for `nan` / `inf` cells.

    `point` in each batch indexes `tags`, the site's tags; a recording may hold fewer of them,
    never others (`tags` None: the recording's own columns). Iterate once; `stats` counts as
    it goes; `position()` / `size` give the bytes read of the file on disk (a progress bar).
    """

    def __init__(self, path: Path | str, tags: Sequence[str] | None, *,
                 chunk_bytes: int = CHUNK_BYTES) -> None:
        self.path = resolve(path)
        self.chunk_bytes = chunk_bytes
        self.stats = ReadStats()
        try:
            self._raw: io.BufferedIOBase = self.path.open("rb")
        except OSError as e:
            raise RecordingError(self.path, f"cannot read it ({e.strerror or e})") from None
        self.size = self.path.stat().st_size
        try:
            gzipped = self._raw.read(2) == _GZIP_MAGIC  # by content: a name may not say
            self._raw.seek(0)
            stream: io.BufferedIOBase = (gzip.GzipFile(fileobj=self._raw, mode="rb") if gzipped
                                 else self._raw)
            self._text = io.TextIOWrapper(_RowLimit(stream, self.path), encoding="utf-8-sig",
                                          newline=None)
            self.columns = self._header(tags)
        except BaseException:
            self._raw.close()
            raise
        index = {tag: i for i, tag in enumerate(self.columns if tags is None else tags)}
        self._point = np.array([index[c] for c in self.columns], dtype=np.int32)
        self._dtype = np.dtype([("ts", f"U{_STAMP_WIDTH}"), ("v", "f8", (len(self.columns),))])
        self._row = 1  # rows consumed, header included
        self._last_ns: int | None = None
        self._last_row = 1

    def __enter__(self) -> RecordingReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._text.close()
        self._raw.close()

    def position(self) -> int:
        """Bytes of the file on disk read so far (compressed bytes for a .gz)."""
        return self._raw.tell() if not self._raw.closed else self.size

    def _lines(self) -> list[str]:
        try:
            return self._text.readlines(self.chunk_bytes)
        except UnicodeDecodeError as e:
            raise RecordingError(self.path, f"not UTF-8 text ({e.reason}) after row "
                                 f"{self._row}") from None
        except (OSError, EOFError, zlib.error) as e:
            raise RecordingError(self.path, f"cannot read it after row {self._row} ({e}); "
                                 "a truncated or damaged .gz file?") from None

    def _header(self, tags: Sequence[str] | None) -> list[str]:
        lines = self._first_line()
        if not lines.strip():
            raise RecordingError(self.path, "the file is empty; row 1 must name the columns: "
                                 "timestamp, then one column per tag")
        names = [c.strip() for c in next(self._records([lines], 1))[1]]
        if names[0].lower() != "timestamp":
            where = next((i for i, c in enumerate(names) if c.lower() == "timestamp"), None)
            reason = ("no timestamp column" if where is None
                      else f"timestamp is column {where + 1}")
            raise RecordingError(self.path, f"{reason}; the first column must be `timestamp` "
                                 f"(ISO 8601 times), found {names[0]!r}", row=1)
        columns = names[1:]
        if not columns:
            raise RecordingError(self.path, "no tag columns after timestamp", row=1)
        known = set(columns if tags is None else tags)
        seen: set[str] = set()
        for k, name in enumerate(columns, start=2):
            if not name:
                raise RecordingError(self.path, "a column without a name", row=1,
                                     column=str(k))
            if name in seen:
                raise RecordingError(self.path, "the column appears twice", row=1, column=name)
            seen.add(name)
            if name not in known:
                raise RecordingError(self.path, "not a tag of the site" +
                                     did_you_mean(name, known, n=3), row=1, column=name)
        return columns

    def _first_line(self) -> str:
        try:
            return self._text.readline()
        except UnicodeDecodeError as e:
            raise RecordingError(self.path, f"not UTF-8 text ({e.reason})", row=1) from None
        except (OSError, EOFError, zlib.error) as e:
            raise RecordingError(self.path, f"cannot read it ({e}); a damaged .gz file?"
                                 ) from None

    def __iter__(self) -> Iterator[Batch]:
        while lines := self._lines():
            if not lines[-1].endswith("\n"):
                lines[-1] += "\n"
            first = self._row + 1
            self._row += len(lines)
            rows, ts, values, empty = self._parse(lines, first)
            if len(ts) == 0:
                continue
            self._check_order(rows, ts)
            yield self._batch(ts, values, empty)
        if self.stats.rows == 0:
            raise RecordingError(self.path, "no readings: the file has a header and no rows")

    # --- parsing -------------------------------------------------------------------------

    def _parse(self, lines: list[str], first: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(row numbers, int64 ns, values rows x columns, which cells are empty) of a chunk,
        counting cells."""
        parsed = self._fast(lines)
        if parsed is None:
            return self._slow(lines, first)
        stamps, values, empty = parsed
        ts = self._stamps(stamps, first)
        self._count(len(ts), int(np.count_nonzero(empty)))
        return np.arange(first, first + len(ts)), ts, values, empty

    def _fast(self, lines: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(timestamp strings, values, which cells are empty) via numpy's C parser; None when
        the chunk needs the row-by-row path (a bad or irregular row, a blank line)."""
        try:
            rec = self._loadtxt(lines)
            empty = np.zeros(rec["v"].shape, dtype=bool)
        except ValueError as e:
            if "string ''" not in str(e):
                return None
            # Empty cells (missing readings) read as NaN; each adds exactly "nan".
            text = "".join(lines)
            filled = _fill_empty(text, "nan")
            try:
                rec = self._loadtxt(filled.splitlines())
            except ValueError:
                return None
            empty = np.isnan(rec["v"])
            if int(np.count_nonzero(empty)) != (len(filled) - len(text)) // 3:
                # `nan` cells (bad readings) too: empty cells are those NaN only when empty.
                empty &= ~np.isnan(self._loadtxt(_fill_empty(text, "0").splitlines())["v"])
        if len(rec) != len(lines):  # blank lines were skipped: row numbers need the slow path
            return None
        stamps = rec["ts"]
        if len(stamps) and int(np.strings.str_len(stamps).max()) >= _STAMP_WIDTH:
            return None
        return stamps, rec["v"], empty

    def _loadtxt(self, lines: list[str]) -> np.ndarray:
        return np.loadtxt(lines, delimiter=",", dtype=self._dtype, comments=None,
                          quotechar='"', ndmin=1)

    def _stamps(self, stamps: np.ndarray, first: int) -> np.ndarray:
        """int64 ns of ISO 8601 strings: vectorised for naive and `Z` times (the usual), row by
        row where there are offsets or something numpy would take too loosely."""
        naive = np.strings.rstrip(np.strings.strip(stamps), "Zz")
        # numpy also reads "now", "today", "NaT" and bare years; a date has 10 characters.
        # It wraps a year it cannot hold in int64 ns silently (2300 reads as 1715, epoch
        # seconds as a year): the fast path takes four-digit years that fit, the row-by-row
        # path judges the rest exactly.
        if int(np.strings.str_len(naive).min()) >= 10 and self._years_fit(naive):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("error")  # an offset: numpy warns; row by row
                    return naive.astype("datetime64[ns]").view(np.int64)
            except (ValueError, Warning):
                pass
        return np.array([self._stamp(str(s), row) for row, s in enumerate(stamps.tolist(),
                                                                         start=first)],
                        dtype=np.int64)

    @staticmethod
    def _years_fit(naive: np.ndarray) -> bool:
        """Every time starts with a four-digit year in [FIRST_YEAR, LAST_YEAR) and a dash."""
        # The strings' code points, read in place (a cast to shorter strings costs as much as
        # parsing the times).
        head = np.ascontiguousarray(naive).view(np.uint32).reshape(len(naive), -1)[:, :5]
        digits = head[:, :4] - np.uint32(ord("0"))  # below "0" wraps to a large number
        if not ((digits <= 9).all() and (head[:, 4] == ord("-")).all()):
            return False
        years = digits @ np.array([1000, 100, 10, 1], dtype=np.uint32)
        return bool(years.min() >= FIRST_YEAR and years.max() < LAST_YEAR)

    def _stamp(self, text: str, row: int) -> int:
        s = text.strip()
        problem = "not an ISO 8601 time such as 2026-01-05T06:00:00Z"
        if len(s) >= 10 and s[:4].isdigit() and s[4] == "-":
            # Microseconds hold any four-digit year: the range is checked there, as nothing
            # wraps; nanoseconds wrap (or are NaT) only within the limit's last microsecond.
            if (us := _numpy_time(s.rstrip("Zz"), "us")) is not None:
                self._in_range(us * 1000, text, row)
                ns = _numpy_time(s.rstrip("Zz"), "ns")
                return self._in_range(ns if ns is not None and ns // 1000 == us
                                      else LAST_NS + 1, text, row)
            try:
                moment = datetime.fromisoformat(s)
            except ValueError as e:
                problem = f"{problem} ({e})"
            else:
                if moment.tzinfo is None:
                    moment = moment.replace(tzinfo=UTC)
                return self._in_range((moment - _EPOCH) // timedelta(microseconds=1) * 1000,
                                      text, row)
        elif s.replace(".", "", 1).isdigit():
            problem += " (a number: seconds since 1970? write the time as ISO 8601)"
        raise RecordingError(self.path, f"{problem}: {text!r}", row=row, column="timestamp")

    def _in_range(self, ns: int, text: str, row: int) -> int:
        if not 0 <= ns <= LAST_NS:
            raise RecordingError(self.path, f"{text!r} is outside {TIME_RANGE}: the times a "
                                 "recording holds are nanoseconds since 1970 in 64 bits",
                                 row=row, column="timestamp")
        return ns

    def _slow(self, lines: list[str], first: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Row by row with the csv module: the reference the fast path must agree with, and
        what finds the row and column of a fault."""
        width = len(self.columns) + 1
        rows: list[int] = []
        ts: list[int] = []
        values = np.full((len(lines), len(self.columns)), np.nan)
        empty = np.zeros(values.shape, dtype=bool)
        for row, cells in self._records(lines, first):
            if not cells or (len(cells) == 1 and not cells[0].strip()):
                continue  # a blank line
            if len(cells) != width:
                raise RecordingError(self.path, f"{len(cells)} cells, but the header names "
                                     f"{width} columns", row=row)
            out, gaps = values[len(rows)], empty[len(rows)]
            for k, cell in enumerate(cells[1:]):
                cell = cell.strip()
                if not cell:
                    gaps[k] = True
                    continue
                try:
                    out[k] = float(cell)
                except ValueError:
                    raise RecordingError(self.path, f"not a number: {cell!r}", row=row,
                                         column=self.columns[k]) from None
            ts.append(self._stamp(cells[0], row))
            rows.append(row)
        empty = empty[: len(rows)]
        self._count(len(rows), int(np.count_nonzero(empty)))
        return (np.array(rows, dtype=np.int64), np.array(ts, dtype=np.int64),
                values[: len(rows)], empty)

    def _records(self, lines: list[str], first: int) -> Iterator[tuple[int, list[str]]]:
        """(row number, cells) of each line; a line the csv module refuses is named."""
        reader = csv.reader(lines)
        for row in itertools.count(first):
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                reason = (f"a cell longer than {csv.field_size_limit():,} characters"
                          if "field limit" in str(e) else f"unreadable CSV: {e}")
                raise RecordingError(self.path, reason, row=row) from None
            yield row, cells

    def _count(self, rows: int, empty: int) -> None:
        s = self.stats
        s.rows += rows
        s.cells += rows * len(self.columns)
        s.empty += empty

    def _check_order(self, rows: np.ndarray, ts: np.ndarray) -> None:
        prev = np.concatenate([[np.iinfo(np.int64).min if self._last_ns is None
                                else self._last_ns], ts[:-1]])
        wrong = np.flatnonzero(ts <= prev)
        if len(wrong):
            i = int(wrong[0])
            row, earlier = int(rows[i]), int(rows[i - 1]) if i else self._last_row
            text = np.datetime_as_string(ts[i : i + 1].view("datetime64[ns]"))[0] + "Z"
            reason = (f"timestamp {text} repeats row {earlier}'s; each row must have its own "
                      "time" if ts[i] == prev[i] else
                      f"timestamp {text} is earlier than row {earlier}'s; rows must be in "
                      "time order")
            raise RecordingError(self.path, reason, row=row, column="timestamp")
        self._last_ns, self._last_row = int(ts[-1]), int(rows[-1])
        if self.stats.first_ns is None:
            self.stats.first_ns = int(ts[0])
        self.stats.last_ns = self._last_ns

    def _batch(self, ts: np.ndarray, values: np.ndarray, empty: np.ndarray) -> Batch:
        present = ~empty
        stamp = np.broadcast_to(ts[:, None], values.shape)[present]
        value = values[present]
        bad = ~np.isfinite(value)
        n_bad = int(np.count_nonzero(bad))
        if n_bad:
            value[bad] = np.nan  # an `inf` cell too: a bad reading has no value
        self.stats.bad += n_bad
        self.stats.readings += len(value) - n_bad
        return Batch(source_ts=stamp, server_ts=stamp, gateway_ts=stamp,
                     point=np.broadcast_to(self._point[None, :], values.shape)[present],
                     value=value, quality=bad.astype(np.uint8) * np.uint8(Quality.BAD),
                     cause=np.zeros(len(value), dtype=np.uint32))


def _numpy_time(text: str, unit: Literal["us", "ns"]) -> int | None:
    """numpy's reading of an ISO 8601 time without offset, in `unit` since 1970; None if it
    does not read it (an offset: numpy only warns)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            return int(np.datetime64(text, unit).view(np.int64))
    except (ValueError, Warning):
        return None


class _RowLimit(io.BufferedIOBase):
    """A recording's bytes as they are, refusing a row longer than MAX_ROW_BYTES before it is
    held whole: a reader reads line by line, and one line of a .csv.gz may inflate to
    hundreds of MB."""

    def __init__(self, stream: io.BufferedIOBase, path: Path) -> None:
        super().__init__()
        self._stream, self._path = stream, path
        self._run = 0  # bytes since the last line break
        self._breaks = 0  # line feeds so far: the row being read is one more

    @property
    def name(self) -> str:
        """The recording's path, as a file's `name` (TextIOWrapper names itself by it)."""
        return str(self._path)

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        return self._checked(self._stream.read(size))

    def read1(self, size: int = -1) -> bytes:
        return self._checked(self._stream.read1(size))

    def close(self) -> None:
        self._stream.close()
        super().close()

    def _checked(self, data: bytes) -> bytes:
        last = max(data.rfind(b"\n"), data.rfind(b"\r"))
        self._run = len(data) - 1 - last if last >= 0 else self._run + len(data)
        if self._run > MAX_ROW_BYTES:
            raise RecordingError(self._path, f"longer than {MAX_ROW_BYTES:,} bytes: a row "
                                 "must end before that (is this a recording?)",
                                 row=self._breaks + data.count(b"\n") + 1)
        self._breaks += data.count(b"\n")
        return data


def _fill_empty(text: str, filler: str) -> str:
    """CSV text with `filler` in its empty cells (past the first column)."""
    for gap, filled in ((",,", f",{filler},"), (",,", f",{filler},"),
                        (",\n", f",{filler}\n")):
        text = text.replace(gap, filled)
    return text


def read_recording(path: Path | str, tags: Sequence[str]) -> tuple[Batch, ReadStats]:
    """A whole (small) recording as one batch; `RecordingReader` streams big ones."""
    with RecordingReader(path, tags) as reader:
        batch = Batch.concat(list(reader))
    return batch, reader.stats


# --- writing -------------------------------------------------------------------------------


def _stamp_texts(ts: np.ndarray) -> list[str]:
    """ISO 8601 `Z` strings, to the finest unit any of the times needs."""
    finest: tuple[tuple[Literal["s", "ms", "us"], int], ...] = (
        ("s", 10**9), ("ms", 10**6), ("us", 10**3))
    unit: Literal["s", "ms", "us", "ns"] = next(
        (u for u, ns in finest if not np.any(ts % ns)), "ns")
    return [f"{s}Z" for s in np.datetime_as_string(ts.view("datetime64[ns]"), unit=unit)]


def write_recording(path: Path | str, tags: Sequence[str], batches: Iterable[Batch]) -> int:
    """Write `batches` (points index `tags`) as a recording; returns the rows written.

    One row per distinct source time. A good reading is written exactly (shortest round-trip
    form); a bad or uncertain one (the recording has no quality column) as `nan`, unless a
    good reading of the tag has the same time; a tag without a reading at that time gets an
    empty cell. Times keep the finest unit they need, down to the nanosecond, so each reading
    stays in its tick. `.gz`: gzipped.
    """
    whole = Batch.concat(list(batches))
    good = (whole.quality == Quality.GOOD) & np.isfinite(whole.value)
    times, row = np.unique(whole.source_ts, return_inverse=True)
    table = np.full((len(times), len(tags)), np.nan)
    # inf marks a bad reading until the text is made (a good value is finite): then `nan`.
    table[row[~good], whole.point[~good]] = np.inf
    table[row[good], whole.point[good]] = whole.value[good]  # a repeat keeps the later one
    template = "%s" + ",%r" * len(tags)
    body = "\n".join(template % (stamp, *values) for stamp, values
                     in zip(_stamp_texts(times), table.tolist(), strict=True))
    body = _ROW_FORMAT_INF.sub("nan", _ROW_FORMAT_NAN.sub("", body))
    text = ",".join(["timestamp", *tags]) + "\n" + body
    text += "\n" if len(times) else ""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8", newline="") as f:
        f.write(text)
    return len(times)


def write_history(path: Path | str, reader: HistorianReader, tags: Sequence[str],
                  start_ns: int, end_ns: int) -> int:
    """What a historian holds of `tags` in [start_ns, end_ns), as a recording."""

    def batches() -> Iterator[Batch]:
        for i, tag in enumerate(tags):
            b = reader.history(tag, start_ns, end_ns)
            yield Batch(source_ts=b.source_ts, server_ts=b.server_ts, gateway_ts=b.gateway_ts,
                        point=np.full(len(b), i, dtype=np.int32), value=b.value,
                        quality=b.quality, cause=b.cause)

    return write_recording(path, tags, batches())
