"""Point lists from CSV, as spreadsheets save them.

Forgiving of form: a UTF-8 BOM, CRLF line ends, `;` or tab separators (Excel in many locales),
blank rows, padding spaces, empty cells (= key absent). Strict about meaning: an unknown or
repeated column, a value under a column without a name, or bytes that are not UTF-8 are
problems. Rows are numbered as the spreadsheet shows them: the header is row 1.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Collection
from pathlib import Path

from gateway.site.suggest import did_you_mean

Row = tuple[int, dict[str, str]]  # (spreadsheet row number, {column: non-empty cell})
Problem = tuple[int, str, str]  # (row, key such as "row 14, column word_order", reason)


def column_letter(index: int) -> str:
    """0 -> "A", 25 -> "Z", 26 -> "AA": how the spreadsheet names an unnamed column."""
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("A") + rest) + letters
    return letters


def _decode(data: bytes) -> tuple[str | None, list[Problem]]:
    try:
        return data.decode("utf-8-sig"), []
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        return None, [(line, f"line {line}", f"not UTF-8 text (byte 0x{data[e.start]:02x}); "
                                       "save the sheet as 'CSV UTF-8'")]


def _delimiter(header_line: str) -> str:
    # Excel writes ';' where the decimal separator is a comma; a tab-separated export also occurs.
    return max((",", ";", "\t"), key=header_line.count)


def read_rows(path: Path, columns: Collection[str]) -> tuple[list[Row], list[Problem]]:
    """The point rows of a CSV file, with every problem found; raises OSError if unreadable."""
    text, problems = _decode(path.read_bytes())
    if text is None:
        return [], problems
    if not text.strip():
        return [], [(1, "row 1", "the file is empty; row 1 must name the columns "
                                 "(tag, device, ...)")]
    reader = csv.reader(io.StringIO(text, newline=""),
                        delimiter=_delimiter(text.partition("\n")[0]))
    try:
        records = [[cell.strip() for cell in record] for record in reader]
    except csv.Error as e:
        return [], [(reader.line_num, f"line {reader.line_num}", f"unreadable CSV: {e}")]

    header, rows = records[0], []
    names: dict[int, str] = {}  # column index -> column name, for the columns kept
    seen: dict[str, int] = {}
    for i, name in enumerate(header):
        if not name:
            continue
        if name in seen:
            problems.append((1, f"row 1, column {name}", f"repeated column (columns "
                             f"{column_letter(seen[name])} and {column_letter(i)})"))
        elif name not in columns:
            problems.append((1, f"row 1, column {name}",
                             "unknown column" + did_you_mean(name, columns)))
        else:
            names[i] = name
        seen.setdefault(name, i)
    if "tag" not in seen:
        problems.append((1, "row 1", "no 'tag' column; row 1 must name the columns "
                                  "(tag, device, kind, ...)"))
        return [], problems

    for number, record in enumerate(records[1:], start=2):
        row: dict[str, str] = {}
        for i, cell in enumerate(record):
            if not cell:
                continue
            if i in names:
                row[names[i]] = cell
            elif i >= len(header) or not header[i]:
                problems.append((number, f"row {number}, column {column_letter(i)}",
                                 f"value {cell!r} under a column with no name in row 1"))
        if row:
            rows.append((number, row))
    return rows, problems
