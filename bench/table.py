"""A row of `python -m bench`'s table: a figure beside its ceiling or peer from the same run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    what: str
    figure: str
    peer: str  # the ceiling or peer measured in the same run (or a published figure)
    ratio: float | None  # figure / peer, when both are rates or sizes of the same thing
    command: str  # what prints the details


def markdown(rows: Sequence[Row]) -> str:
    """The rows as a Markdown table (as the README shows it)."""
    lines = ["| what | figure | next to | ratio | details |", "|---|---|---|---|---|"]
    lines += [f"| {r.what} | {r.figure} | {r.peer} | {ratio(r.ratio)} | `{r.command}` |"
              for r in rows]
    return "\n".join(lines)


def ratio(x: float | None) -> str:
    """Two decimals; one significant digit below 0.1 (a query 500 times faster is not 0.00)."""
    if x is None:
        return ""
    return f"{x:.2f}" if x >= 0.1 else f"{x:.1g}"
