"""One part of a saved engine state: the arrays whose names start with a prefix, without it.

The engine saves every detector's arrays under `<detector>/`, and a detector its own parts'
under a prefix of theirs (leak's `storage/`, `mains/`; tag anomaly's `profile_`, `ends_`).
Each array is taken from the whole only when asked for: a state read from its file part by
part (the gateway's engine_state) is never held whole, nor read once per part.

>>> import numpy as np
>>> part = StatePart({"leak/storage/area": np.ones(2), "leak/cusum": np.zeros(2)}, "leak/storage/")
>>> list(part), part["area"].tolist()
(['area'], [1.0, 1.0])
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np


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
