"""One part of a saved engine state: the arrays whose names start with a prefix, without it;
and `restored`, a saved array made a detector's own again.

The engine saves every detector's arrays under `<detector>/`, and a detector its own parts'
under a prefix of theirs (leak's `storage/`, `mains/`; tag anomaly's `profile_`, `ends_`).
Each array is taken from the whole only when asked for: a state read from its file part by
part (the gateway's engine_state) is never held whole, nor read once per part.

>>> import numpy as np
>>> part = StatePart({"leak/storage/area": np.ones(2), "leak/cusum": np.zeros(2)}, "leak/storage/")
>>> list(part), part["area"].tolist()
(['area'], [1.0, 1.0])

A detector allocates its per-tag tables zeroed, and the system maps a zeroed page only once
something is written to it: a never-stopped gateway holds only the parts of its daily profiles,
hourly rows and histograms that it has learned so far. A restart that copied its saved tables
whole wrote every page, zeros too (at 50,000 tags ~18 MB more than the same gateway before the
stop, 70 s after start: `python -m bench.footprint --restart`). `restored` writes only the
pages that hold something, so a restarted gateway holds what the one before it held; a table
learned whole (a profile after a week) is held whole by both.

>>> saved = np.zeros(3000, dtype=np.float32)
>>> saved[[5, 2999]] = -0.0, 7.5
>>> back = restored(saved)
>>> bool(np.array_equal(back.view(np.uint32), saved.view(np.uint32)))
True
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator, Mapping

import numpy as np
from numpy.typing import DTypeLike


class StatePart(Mapping[str, np.ndarray]):
    """The arrays of `arrays` whose names start with `prefix`, named without it."""

    def __init__(self, arrays: Mapping[str, np.ndarray], prefix: str) -> None:
        self._arrays, self._prefix = arrays, prefix
        self._names = [k.removeprefix(prefix) for k in arrays if k.startswith(prefix)]

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._names:
            raise KeyError(name)
        return self._arrays[self._prefix + name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def restored(saved: np.ndarray, dtype: DTypeLike | None = None) -> np.ndarray:
    """A new C-ordered array equal to `saved` (converted to `dtype`, if given) that leaves
    untouched, still unmapped, the memory pages where `saved` holds only zero bits (0 in any
    number type: -0.0 and every NaN are copied as they are)."""
    out = np.zeros(saved.shape, dtype=saved.dtype if dtype is None else dtype)
    flat, src = out.reshape(-1), np.ascontiguousarray(saved).reshape(-1)
    if src.dtype.itemsize not in (1, 2, 4, 8) or not flat.size:
        flat[...] = src  # no integer view of its bits: copied whole
        return out
    # chunks of one page of `out` each, the first up to its first page boundary
    step = max(1, mmap.PAGESIZE // out.itemsize)
    head = (-out.ctypes.data % mmap.PAGESIZE) // out.itemsize
    starts = np.unique(np.r_[0, np.arange(head, flat.size, step)])
    held = np.logical_or.reduceat(src.view(f"u{src.dtype.itemsize}") != 0, starts)
    ends = np.r_[starts[1:], flat.size]
    for a, b in zip(starts[held].tolist(), ends[held].tolist(), strict=True):
        flat[a:b] = src[a:b]
    return out
