"""The anomaly engine's state file (data_dir/anomaly-state.npz, or `replay --state`): the
engine's arrays and the caller's `extra` ones (such as how far into the spool it got) in one
.npz, replaced atomically. The engine itself does no file I/O: `Engine.state()` and
`Engine.load_state()` exchange arrays."""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

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
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise StateError(f"{path}: not an engine state file ({e})") from e
    extra = {k.removeprefix(EXTRA): v for k, v in arrays.items() if k.startswith(EXTRA)}
    engine.load_state({k: v for k, v in arrays.items() if not k.startswith(EXTRA)},
                      source=str(path))
    for name, arr in extra.items():
        if arr.dtype.kind not in "biuf":
            raise StateError(f"{path}: {EXTRA}{name} holds {arr.dtype}, not numbers")
    return extra
