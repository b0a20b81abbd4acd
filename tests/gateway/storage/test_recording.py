"""Recordings (gateway/storage/recording.py): DESIGN.md's wide CSV read into batches, bad input
named by row and column through `scadawatch replay`, and the writer's round trip."""

from __future__ import annotations

import gzip
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import CliRun

from anomaly.core.batch import Batch, Quality
from gateway.storage.historian import EmbeddedHistorian
from gateway.storage.recording import (
    MAX_ROW_BYTES,
    RecordingError,
    RecordingReader,
    read_recording,
    write_history,
    write_recording,
)

TAGS = ["dma1.inlet.flow", "dma1.outlet.flow", "dma1.j1.pressure"]
SITE = """\
[site]
name = "mini"
data_dir = "data"
""" + "".join(f"""
[[points]]
tag = "{tag}"
kind = "{tag.rsplit('.', 1)[1]}"
zone = "dma1"
""" for tag in TAGS)
S = 10**9
T0 = 1767571200 * S  # 2026-01-05T00:00:00Z
HEADER = "timestamp," + ",".join(TAGS) + "\n"
# chunk sizes: one line per chunk (every chunk boundary), and the default
CHUNKS = [1, 4 << 20]


@pytest.fixture
def write(tmp_path: Path) -> Callable[..., Path]:
    """Write recording text (str, or bytes as is) to a file; `.gz` names are gzipped."""

    def put(content: str | bytes, name: str = "readings.csv") -> Path:
        data = content.encode() if isinstance(content, str) else content
        path = tmp_path / name
        path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
        return path

    return put


@pytest.fixture
def site(tmp_path: Path) -> Path:
    path = tmp_path / "site.toml"
    path.write_text(SITE)
    return path


def triples(batch: Batch) -> list[tuple[int, str, float]]:
    """(seconds after T0, tag, value) of every reading."""
    return [((t - T0) / S, TAGS[p], v) for t, p, v in
            zip(batch.source_ts.tolist(), batch.point.tolist(), batch.value.tolist(),
                strict=True)]


def assert_triples(batch: Batch, expected: list[tuple[float, str, float]]) -> None:
    """The readings of `batch` are `expected`, NaN (a bad reading) matching NaN."""
    got = triples(batch)
    assert [tag for _, tag, _ in got] == [tag for _, tag, _ in expected]
    assert [t for t, *_ in got] == pytest.approx([t for t, *_ in expected])
    np.testing.assert_array_equal([v for *_, v in got], [v for *_, v in expected])


NAN = float("nan")
GOOD = [  # name, file text, expected (seconds, tag, value; NaN: bad), empty cells, bad cells
    ("plain Z times",
     HEADER + "2026-01-05T00:00:00Z,1.5,2,3\n2026-01-05T00:01:00Z,4,5e1,-6\n",
     [(0, TAGS[0], 1.5), (0, TAGS[1], 2), (0, TAGS[2], 3),
      (60, TAGS[0], 4), (60, TAGS[1], 50), (60, TAGS[2], -6)], 0, 0),
    ("empty cells are no reading",
     HEADER + "2026-01-05T00:00:00Z,,2,\n2026-01-05T00:01:00Z,4,,\n",
     [(0, TAGS[1], 2), (60, TAGS[0], 4)], 4, 0),
    ("nan and inf cells are bad readings, counted",
     HEADER + "2026-01-05T00:00:00Z,nan,2,inf\n2026-01-05T00:01:00Z,-inf,NaN,7\n",
     [(0, TAGS[0], NAN), (0, TAGS[1], 2), (0, TAGS[2], NAN), (60, TAGS[0], NAN),
      (60, TAGS[1], NAN), (60, TAGS[2], 7)], 0, 4),
    ("empty and nan cells side by side",
     HEADER + "2026-01-05T00:00:00Z,,nan,3\n2026-01-05T00:01:00Z,nan,,\n",
     [(0, TAGS[1], NAN), (0, TAGS[2], 3), (60, TAGS[0], NAN)], 3, 2),
    ("naive times are UTC, offsets are converted",
     HEADER + "2026-01-05T00:00:00,1,,\n2026-01-05T02:01:00+02:00,2,,\n"
     "2026-01-04T19:02:00-05:00,3,,\n",
     [(0, TAGS[0], 1), (60, TAGS[0], 2), (120, TAGS[0], 3)], 6, 0),
    ("fractions of a second down to the nanosecond",
     HEADER + "2026-01-05T00:00:00.5Z,1,,\n2026-01-05T00:00:00.500000001Z,2,,\n",
     [(0.5, TAGS[0], 1), (0.500000001, TAGS[0], 2)], 4, 0),
    ("spreadsheet form: BOM, CRLF, quotes, blank lines, padding, no final newline",
     "\ufeff" + HEADER.replace("\n", "\r\n") + '"2026-01-05T00:00:00Z", 1 ,"2",3\r\n\r\n'
     "2026-01-05T00:01:00Z,4,5,6",
     [(0, TAGS[0], 1), (0, TAGS[1], 2), (0, TAGS[2], 3),
      (60, TAGS[0], 4), (60, TAGS[1], 5), (60, TAGS[2], 6)], 0, 0),
    ("fewer columns than the site has tags, in any order",
     f"timestamp,{TAGS[2]},{TAGS[0]}\n2026-01-05T00:00:00Z,3,\n2026-01-05T00:01:00Z,,1\n",
     [(0, TAGS[2], 3), (60, TAGS[0], 1)], 2, 0),
]


@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize(("text", "expected", "empty", "bad"),
                         [case[1:] for case in GOOD], ids=[case[0] for case in GOOD])
def test_reads_a_reading_per_present_cell(write: Callable[..., Path], chunk: int, text: str,
                                          expected: list, empty: int, bad: int) -> None:
    with RecordingReader(write(text), TAGS, chunk_bytes=chunk) as reader:
        batch = Batch.concat(list(reader))
    assert_triples(batch, expected)
    assert np.array_equal(batch.quality == Quality.BAD, np.isnan(batch.value))
    assert (reader.stats.empty, reader.stats.bad) == (empty, bad)
    assert reader.stats.readings == len(expected) - bad


@pytest.mark.parametrize("form", ["file.csv", "file.csv.gz", "directory"])
def test_reads_csv_gzip_and_export_directories(write: Callable[..., Path], form: str) -> None:
    text = HEADER + "2026-01-05T00:00:00Z,1,2,3\n"
    path = write(text, "readings.csv" if form == "directory" else form)
    batch, stats = read_recording(path.parent if form == "directory" else path, TAGS)
    assert triples(batch) == [(0, TAGS[0], 1), (0, TAGS[1], 2), (0, TAGS[2], 3)]
    assert (stats.rows, stats.cells) == (1, 3)


def test_big_chunks_match_row_by_row_reading(write: Callable[..., Path]) -> None:
    """The vectorised path and the row-by-row path (one line per chunk, offsets) agree."""
    rng = np.random.default_rng(7)
    values = rng.normal(50, 20, (500, len(TAGS)))
    values[rng.random(values.shape) < 0.1] = np.nan
    rows = [f"2026-01-05T{i // 60:02d}:{i % 60:02d}:00Z," +
            ",".join("" if np.isnan(v) else repr(v) for v in row)
            for i, row in enumerate(values.tolist())]
    path = write(HEADER + "\n".join(rows) + "\n")
    fast, _ = read_recording(path, TAGS)
    with RecordingReader(path, TAGS, chunk_bytes=1) as reader:
        slow = Batch.concat(list(reader))
    shifted = write(HEADER + "\n".join(r.replace("Z,", "+00:00,", 1) for r in rows) + "\n",
                    "offsets.csv")
    offsets, _ = read_recording(shifted, TAGS)
    for other in (slow, offsets):
        for column in ("source_ts", "point", "value"):
            assert np.array_equal(getattr(fast, column), getattr(other, column))
    assert len(fast) == int(np.isfinite(values).sum())


BAD = [  # name, file content, fragments of the error message
    ("unknown column", "timestamp,dma1.inlet.flw\n2026-01-05T00:00:00Z,1\n",
     ["row 1, column dma1.inlet.flw", "not a tag of the site", "'dma1.inlet.flow'"]),
    ("repeated column", f"timestamp,{TAGS[0]},{TAGS[0]}\n2026-01-05T00:00:00Z,1,2\n",
     [f"row 1, column {TAGS[0]}", "appears twice"]),
    ("no timestamp column", f"time,{TAGS[0]}\n2026-01-05T00:00:00Z,1\n",
     ["row 1", "no timestamp column", "'time'"]),
    ("timestamp not first", f"{TAGS[0]},timestamp\n1,2026-01-05T00:00:00Z\n",
     ["row 1", "timestamp is column 2"]),
    ("unparsable timestamp", HEADER + "2026-01-05T00:00:00Z,1,2,3\n5 Jan 2026,1,2,3\n",
     ["row 3, column timestamp", "not an ISO 8601 time", "'5 Jan 2026'"]),
    ("impossible date", HEADER + "2026-01-05T00:00:00Z,1,2,3\n2026-13-05T00:00:00Z,1,2,3\n",
     ["row 3, column timestamp", "not an ISO 8601 time"]),
    ("unsorted timestamps", HEADER + "2026-01-05T00:00:00Z,1,2,3\n2026-01-05T00:02:00Z,1,2,3\n"
     "2026-01-05T00:01:00Z,1,2,3\n",
     ["row 4, column timestamp", "earlier than row 3", "time order"]),
    ("duplicate timestamps", HEADER + "2026-01-05T00:00:00Z,1,2,3\n2026-01-05T00:01:00Z,1,2,3\n"
     "2026-01-05T01:01:00+01:00,1,2,3\n",
     ["row 4, column timestamp", "repeats row 3"]),
    ("non-numeric cell", HEADER + "2026-01-05T00:00:00Z,1,2,3\n2026-01-05T00:01:00Z,1,abc,3\n",
     [f"row 3, column {TAGS[1]}", "not a number: 'abc'"]),
    ("decimal comma", HEADER + '2026-01-05T00:00:00Z,1,"2,5",3\n',
     [f"row 2, column {TAGS[1]}", "not a number: '2,5'"]),
    ("missing cells", HEADER + "2026-01-05T00:00:00Z,1,2,3\n2026-01-05T00:01:00Z,1,2\n",
     ["row 3", "3 cells, but the header names 4 columns"]),
    ("empty file", "", ["the file is empty", "timestamp"]),
    ("blank file", "\n\n", ["the file is empty"]),
    ("header only", HEADER, ["no readings", "no rows"]),
    ("not UTF-8", (HEADER + "2026-01-05T00:00:00Z,1,2,\xff\n").encode("latin-1"),
     ["not UTF-8"]),
    # Times that int64 nanoseconds cannot hold, which numpy would wrap silently:
    ("year 2300", HEADER + "2300-01-01T00:00:00Z,1,2,3\n",
     ["row 2, column timestamp", "'2300-01-01T00:00:00Z' is outside 1970-01-01T00:00:00Z to "
      "2262-04-11T23:47:16Z"]),
    ("year 2300 among offsets", HEADER + "2026-01-05T00:00:00+01:00,1,2,3\n"
     "2300-01-01T00:00:00+01:00,1,2,3\n", ["row 3, column timestamp", "is outside"]),
    ("past the last nanosecond", HEADER + "2262-04-11T23:47:16.854775808Z,1,2,3\n",
     ["row 2, column timestamp", "is outside"]),
    ("past 2262 by its offset", HEADER + "2262-04-11T23:00:00-05:00,1,2,3\n",
     ["row 2, column timestamp", "is outside"]),
    ("before 1970", HEADER + "1969-12-31T23:59:59Z,1,2,3\n2026-01-05T00:00:00Z,1,2,3\n",
     ["row 2, column timestamp", "is outside"]),
    ("epoch seconds", HEADER + "1767571200,1,2,3\n1767571260,1,2,3\n",
     ["row 2, column timestamp", "seconds since 1970? write the time as ISO 8601"]),
    ("ten-digit year", HEADER + "1767571200-01-01T00:00:00Z,1,2,3\n",
     ["row 2, column timestamp", "not an ISO 8601 time"]),
    # Cells and rows beyond the readers' limits:
    ("cell of 140,000 characters", HEADER + "2026-01-05T00:00:00Z,1,2,3\n"
     "2026-01-05T00:01:00Z,1," + "x" * 140_000 + ",3\n",
     ["row 3: a cell longer than 131,072 characters"]),
    ("header cell of 140,000 characters", "timestamp," + "t" * 140_000 + "\n",
     ["row 1: a cell longer than 131,072 characters"]),
    ("row of 5 MB", HEADER + "2026-01-05T00:00:00Z,1,2,3\n2026-01-05T00:01:00Z,"
     + "1" * (5 << 20) + ",2,3\n", ["row 3: longer than 4,194,304 bytes"]),
]


@pytest.mark.parametrize(("content", "fragments"), [case[1:] for case in BAD],
                         ids=[case[0] for case in BAD])
def test_bad_input_is_named_by_row_and_column(cli: CliRun, write: Callable[..., Path],
                                              site: Path, tmp_path: Path,
                                              content: str | bytes,
                                              fragments: list[str]) -> None:
    path = write(content)
    code, out, err = cli("replay", "--config", site, "--input", path,
                         "--out", tmp_path / "alarms.jsonl")
    assert code == 2, out + err
    assert f"{path}: " in err and "Traceback" not in err
    for fragment in fragments:
        assert fragment in err


@pytest.mark.parametrize("chunk", CHUNKS)
def test_order_is_checked_across_chunks(write: Callable[..., Path], chunk: int) -> None:
    rows = "".join(f"2026-01-05T00:{m:02d}:00Z,1,2,3\n" for m in range(50))
    path = write(HEADER + rows + "2026-01-05T00:49:00Z,1,2,3\n")
    with pytest.raises(RecordingError, match=r"row 52, column timestamp: .* repeats row 51"):
        read_recording(path, TAGS) if chunk > 1 else list(RecordingReader(path, TAGS,
                                                                          chunk_bytes=chunk))


def truncated_gzip(folder: Path) -> Path:
    path = folder / "cut.csv.gz"
    path.write_bytes(gzip.compress((HEADER + "2026-01-05T00:00:00Z,1,2,3\n" * 50).encode())[:60])
    return path


@pytest.mark.parametrize(("make", "fragment"), [
    (lambda d: d / "nowhere.csv", "no such file or directory"),
    (lambda d: d, "a directory without readings.csv"),
    (truncated_gzip, "damaged .gz"),
], ids=["missing", "directory", "truncated gzip"])
def test_unreadable_paths_are_named(cli: CliRun, site: Path, tmp_path: Path,
                                    make: Callable[[Path], Path], fragment: str) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    code, _, err = cli("replay", "--config", site, "--input", make(folder),
                       "--out", tmp_path / "alarms.jsonl")
    assert code == 2 and fragment in err and "Traceback" not in err


@pytest.mark.parametrize("name", ["back.csv", "back.csv.gz"])
def test_writer_round_trip_is_exact(tmp_path: Path, name: str) -> None:
    """Good readings come back bit for bit; bad and uncertain ones as bad readings (`nan`
    cells); times to the nanosecond."""
    ts = T0 + np.array([0, 0, 0, 1, 1, 2, 2, 2]) * S + np.array([0, 0, 0, 0, 0, 7, 7, 7])
    batches = [
        Batch.of(source_ts=ts[:5], point=[0, 1, 2, 0, 2], value=[0.1, 1e-300, -0.0, 2 / 3, 5],
                 quality=[0, 0, 0, 0, Quality.BAD]),
        Batch.of(source_ts=ts[5:], point=[2, 1, 0], value=[1e20, 3.5, np.pi],
                 quality=[Quality.GOOD, Quality.UNCERTAIN, Quality.GOOD]),
    ]
    assert write_recording(tmp_path / name, TAGS, batches) == 3
    back, stats = read_recording(tmp_path / name, TAGS)
    written = Batch.concat(batches).take(np.array([0, 1, 2, 3, 4, 7, 6, 5]))  # by time, tag
    for column in ("source_ts", "point"):
        assert np.array_equal(getattr(back, column), getattr(written, column))
    good = written.quality == Quality.GOOD
    assert np.array_equal(back.quality == Quality.BAD, ~good)
    assert np.array_equal(back.value[good], written.value[good])
    assert np.isnan(back.value[~good]).all()
    assert np.signbit(back.value[2])
    assert (stats.rows, stats.empty, stats.bad) == (3, 1, 2)


def test_what_a_historian_holds_exports_as_a_recording(tmp_path: Path) -> None:
    """The parity path: readings the gateway stored, written out, read back for replay."""
    historian = EmbeddedHistorian(tmp_path / "historian.sqlite", TAGS)
    try:
        stored = Batch.of(source_ts=T0 + np.array([0, 0, 60, 60, 120]) * S,
                          point=[2, 0, 0, 1, 2], value=[3.0, 1.0, 1.5, np.nan, 3.25],
                          quality=[0, 0, 0, Quality.BAD, 0])
        historian.store([(1, stored)])
        rows = write_history(tmp_path / "out.csv", historian, TAGS, T0, T0 + 3600 * S)
    finally:
        historian.close()
    assert rows == 3
    back, _ = read_recording(tmp_path / "out.csv", TAGS)
    assert_triples(back, [(0, TAGS[0], 1.0), (0, TAGS[2], 3.0), (60, TAGS[0], 1.5),
                          (60, TAGS[1], NAN), (120, TAGS[2], 3.25)])
    assert back.quality.tolist() == [0, 0, 0, Quality.BAD, 0]


@pytest.mark.reliability
def test_a_400_mb_line_of_a_gzip_is_refused_in_bounded_memory(site: Path,
                                                               tmp_path: Path) -> None:
    """A 2 MB .csv.gz that inflates to one row of 400 MB: refused once the row passes
    MAX_ROW_BYTES. When rows were read whole, replay's peak RSS reached 2.5 GB on it."""
    path = tmp_path / "one-line.csv.gz"
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write((HEADER + "2026-01-05T00:00:00Z,").encode())
        block = b"1" * (1 << 20)
        for _ in range(400):
            f.write(block)
        f.write(b",2,3\n")
    # Its own process, which prints its peak RSS: VmHWM, its memory's alone (ru_maxrss would
    # keep the forking pytest's from before the exec).
    measured = ("import sys\nfrom scadawatch.cli import main\ncode = main(sys.argv[1:])\n"
                "status = open('/proc/self/status').read().split('VmHWM:')[1]\n"
                "print(int(status.split()[0]) * 1024)\nsys.exit(code)")
    done = subprocess.run([sys.executable, "-c", measured, "replay", "--config", str(site),
                           "--input", str(path), "--out", str(tmp_path / "alarms.jsonl")],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stderr
    assert f"{path}: row 2: longer than {MAX_ROW_BYTES:,} bytes" in done.stderr
    peak = int(done.stdout)
    assert peak < 200 << 20, f"peak RSS {peak / 2**20:.0f} MiB"  # 53 MiB measured here
