"""A learned table of rows x tags (a daily profile: a row per day type and slot of the day) held
as 16-bit integers, each tag's column on a power-of-two grid of its own, with the rows being
learned open in float32.

A tag's daily profile is the largest table a detector keeps per tag (3 day types x 48 slots:
at 50,000 tags 29 MB in float32), and a learned gateway holds it whole. Its values are a
tag's mean deviation from its level per slot; a slot is judged against the tag's spread, of
which the profile is at most a few times, so 15 bits of the column's largest value (3e-5 of
it) are far below anything judged. Rounding each tick's small update (1/210 of the residual
once a slot learns at its floor rate) would stall the learning, so a row is learned in float32
while its slot lasts (`open`) and rounded once when the slot ends (`close`): an update of a
whole slot moves the value by about a seventh of its residual, and stalls only within 1e-4 of
the column's largest value. Each close sets every touched tag's grid afresh from its column's
largest value, so a tag whose profile shrank (commissioning's large swings long forgotten)
regains the finer grid.

>>> import numpy as np
>>> t = QuantisedRows(rows=4, n=2)
>>> t.open([1])[0] += np.float32([2.5, -0.001])
>>> t.close()
>>> [round(float(v), 6) for v in t.row(1)]
[2.5, -0.001]
>>> t.row(0).tolist()
[0.0, 0.0]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from anomaly.tables.state_part import restored

BITS = 15  # of each tag's largest value, the sign apart (int16)
TOP = 2**BITS - 1


class QuantisedRows:
    """`rows` x `n` values, column j as int16 q times 2**exp[j]; `open(rows)` hands out those
    rows in float32 to be changed in place until `close()`, which rounds them back."""

    def __init__(self, rows: int, n: int) -> None:
        self.q = np.zeros((rows, n), dtype=np.int16)
        self.exp = np.zeros(n, dtype=np.int16)
        self.open_rows = np.full(0, -1, dtype=np.int64)
        self.open_values = np.zeros((0, n), dtype=np.float32)

    def row(self, k: int) -> np.ndarray:
        """Row `k` in float32 (its open values while it is open)."""
        hit = np.flatnonzero(self.open_rows == k)
        if len(hit):
            return self.open_values[hit[0]]
        return np.ldexp(self.q[k], self.exp, dtype=np.float32)

    def open(self, rows: Sequence[int]) -> np.ndarray:
        """Rows `rows` (distinct) in float32, open for learning in place; rows already open
        stay so, others are closed first."""
        rows = list(rows)
        if self.open_rows.tolist() != rows:
            self.close()
            self.open_values = np.stack([self.row(k) for k in rows])
            self.open_rows = np.array(rows, dtype=np.int64)
        return self.open_values

    def close(self) -> None:
        """Round the open rows into the table, each tag's grid set by its column's largest
        value."""
        if not len(self.open_rows):
            return
        values = self.open_values
        largest = np.maximum(np.abs(self.q.max(axis=0)), np.abs(self.q.min(axis=0)))
        largest = np.maximum(np.ldexp(largest, self.exp, dtype=np.float32),
                             np.abs(values).max(axis=0))
        # largest < 2**e, so largest / 2**(e - BITS) < 2**BITS: at most TOP after rounding
        # (and clipping the one case that rounds up to 2**BITS)
        exp = np.where(largest > 0, np.frexp(largest)[1] - BITS, self.exp).astype(np.int16)
        moved = np.flatnonzero(exp != self.exp)
        if len(moved):
            shift = (self.exp[moved] - exp[moved]).astype(np.int64)
            for k in range(len(self.q)):  # a row at a time: no table-sized temporary
                self.q[k, moved] = _rounded(np.ldexp(self.q[k, moved].astype(np.float64),
                                                     shift))
            self.exp = exp
        for k, v in zip(self.open_rows.tolist(), values, strict=True):
            self.q[k] = _rounded(np.ldexp(v.astype(np.float64), -self.exp.astype(np.int64)))
        self.open_rows = np.full(0, -1, dtype=np.int64)
        self.open_values = np.zeros((0, self.q.shape[1]), dtype=np.float32)

    def state(self) -> dict[str, np.ndarray]:
        """The table, its open rows closed first: a save ends their slot early (one rounding
        more), so that an engine restarted from it goes on exactly as the one saved."""
        self.close()
        return {"q": self.q, "exp": self.exp}

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        q, exp = state["q"], state["exp"]
        if q.shape != self.q.shape or exp.shape != self.exp.shape:
            raise ValueError(f"quantised rows: {q.shape} and {exp.shape}, not {self.q.shape}")
        self.q, self.exp = restored(q, np.int16), restored(exp, np.int16)
        self.open_rows = np.full(0, -1, dtype=np.int64)
        self.open_values = np.zeros((0, self.q.shape[1]), dtype=np.float32)


def _rounded(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), -TOP, TOP).astype(np.int16)
