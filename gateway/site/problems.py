"""What the site-file rules report: a problem at a place, and how a place is named.

The loader turns each `SiteProblem` into a `ConfigProblem` naming the file and key path; a
`RowName` names a row as the user wrote it (a point from a CSV by its row)."""

from __future__ import annotations

from collections.abc import Callable

SiteProblem = tuple[str, int, str, str]  # ("points", 12, "word_order", reason); -1: a table
RowName = Callable[[str, int], str]  # ("points", 12) -> "points[12]" or "points.csv row 5"
