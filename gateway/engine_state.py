"""The anomaly engine's state file (data_dir/anomaly-state.npz, or `replay --state`): the
engine's arrays and the caller's `extra` ones (such as how far into the spool it got) in one
.npz, replaced atomically. The engine itself does no file I/O: `Engine.state()` and
`Engine.load_state()` exchange arrays."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
from numpy.lib.npyio import NpzFile

from anomaly.engine import Engine, StateError
from gateway.data_dir import write_atomically

EXTRA = "extra/"


def save_state(engine: Engine, path: Path,
               extra: Mapping[str, np.ndarray] | None = None) -> None:
    """Write `engine`'s state with the caller's `extra` arrays, atomically and durably."""
    arrays = {**{f"{EXTRA}{k}": v for k, v in (extra or {}).items()}, **engine.state()}
    write_atomically(Path(path), lambda f: np.savez(f, **arrays),  # type: ignore[arg-type]
                       durable=True)  # numpy's stub reads **arrays as allow_pickle: bool


def load_state(engine: Engine, path: Path) -> dict[str, np.ndarray]:
    """Resume `engine` from `save_state()` and return its `extra` arrays; StateError naming the
    file when it is not a state this engine wrote. Numbers and text only, never objects (no
    pickle: np.load refuses them)."""
    try:
        with np.load(Path(path), allow_pickle=False) as data:
            stored = _Stored(data, path)
            extra = {k.removeprefix(EXTRA): stored[k] for k in data.files if k.startswith(EXTRA)}
            engine.load_state(_Stored(data, path, exclude=EXTRA), source=str(path))
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise StateError(f"{path}: not an engine state file ({e})") from e
    for name, arr in extra.items():
        if arr.dtype.kind not in "biuf":
            raise StateError(f"{path}: {EXTRA}{name} holds {arr.dtype}, not numbers")
    return extra


class _Stored(Mapping[str, np.ndarray]):
    """The arrays of an open .npz, each read from the file when asked for: the engine checks
    and copies them part by part, so a restart never holds every saved array at once beside
    the engine's own (at 50,000 points the state is ~80 MB; read whole first, the start-up
    peak was three times that)."""

    def __init__(self, data: NpzFile, path: Path, exclude: str | None = None) -> None:
        self._data, self._path = data, path
        self._names = [k for k in data.files if exclude is None or not k.startswith(exclude)]

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._names:
            raise KeyError(name)
        try:
            return self._data[name]
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise StateError(f"{self._path}: not an engine state file ({name}: {e})") from e

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)
