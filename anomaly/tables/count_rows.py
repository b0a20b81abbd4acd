"""A table of rows x tags of small counts that stop at a cap (the ticks each slot of a daily
profile has learned), a row held as one number while every tag's count in it is the same.

Where every tag is read on every tick (a polled site), every tag's count of a row is the same,
so the table is a few numbers, not rows x tags of them (tag anomaly's 96 rows: 4.8 MB at
50,000 tags). A row is held per tag only while its counts differ (a device down for a while,
tags reporting on change), and as one number again once they are the same, at the latest when
they have all reached the cap. The values are the same either way, so nothing judged changes.

>>> import numpy as np
>>> c = CountRows(rows=2, n=3, cap=2)
>>> c.add(0, np.array([True, True, True])); c.row(0).tolist(), c.held()
([1, 1, 1], 0)
>>> c.add(0, np.array([True, False, True])); c.row(0).tolist(), c.held()
([2, 1, 2], 1)
>>> c.add(0, np.array([True, True, True])); c.row(0).tolist(), c.held()
([2, 2, 2], 0)
>>> c.full().tolist()
[[2, 2, 2], [0, 0, 0]]
"""

from __future__ import annotations

import numpy as np


class CountRows:
    """`rows` x `n` counts from 0 up to `cap` (in the smallest unsigned type holding it)."""

    def __init__(self, rows: int, n: int, cap: int) -> None:
        self.n, self.cap = n, cap
        self.dtype = np.min_scalar_type(cap)
        # per row: the one count of every tag, or each tag's
        self._rows: list[int | np.ndarray] = [0] * rows

    def row(self, k: int) -> np.ndarray:
        """Row `k`'s counts, per tag; not to be written (a row of one count is a broadcast)."""
        r = self._rows[k]
        if isinstance(r, np.ndarray):
            return r
        return np.broadcast_to(np.array(r, dtype=self.dtype), (self.n,))

    def add(self, k: int, more: np.ndarray) -> None:
        """Count one more in row `k` for the tags of `more` (a boolean mask) below the cap."""
        r = self._rows[k]
        if not isinstance(r, np.ndarray):
            if r >= self.cap or not more.any():
                return
            if more.all():
                self._rows[k] = r + 1
                return
            r = np.full(self.n, r, dtype=self.dtype)
        r += more & (r < self.cap)
        self._rows[k] = self._held(r)

    def held(self) -> int:
        """Rows held per tag."""
        return sum(isinstance(r, np.ndarray) for r in self._rows)

    def full(self) -> np.ndarray:
        """The whole table, rows x n (for the saved state)."""
        out = np.empty((len(self._rows), self.n), dtype=self.dtype)
        for k, r in enumerate(self._rows):
            out[k] = r
        return out

    def load(self, table: np.ndarray) -> None:
        """From `full()`'s table (a saved state)."""
        if table.shape != (len(self._rows), self.n):
            raise ValueError(f"counts: {table.shape}, not {(len(self._rows), self.n)}")
        self._rows = [self._held(np.array(row, dtype=self.dtype)) for row in table]

    @staticmethod
    def _held(row: np.ndarray) -> int | np.ndarray:
        """`row` as one count when all its counts are that one."""
        if not len(row) or (row == row[0]).all():
            return int(row[0]) if len(row) else 0
        return row
