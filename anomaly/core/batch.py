"""Columnar batches of readings, the unit of data that flows through scadawatch.

A poll of one device yields one `Batch`: parallel numpy arrays, one row per reading.
Per-reading Python objects never appear on the hot path.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar

import numpy as np
import numpy.typing as npt


class Quality(IntEnum):
    """Quality of a reading, ordered so that `max()` gives the worst of several."""

    GOOD = 0
    UNCERTAIN = 1
    BAD = 2


@dataclass(frozen=True, slots=True)
class Batch:
    """Readings as parallel arrays.

    - `source_ts`, `server_ts`, `gateway_ts`: int64 nanoseconds since the Unix epoch (UTC):
      when the device measured the value (the gateway's receipt time when the protocol
      carries none, as in Modbus), when the server stamped it (OPC UA ServerTimestamp; equal
      to the source timestamp where there is no server), and when the gateway received it.
    - `point`: int32 index into the site's point table.
    - `value`: float64 engineering value (after scale/offset); NaN when quality is bad.
    - `quality`: uint8 `Quality`.
    - `cause`: uint32 raw cause: 0 when good, a gateway cause code (see `gateway.inputs.quality`)
      or an OPC UA status code.

    >>> b = Batch.of(source_ts=[1, 2], point=[0, 1], value=[1.5, float("nan")],
    ...              quality=[Quality.GOOD, Quality.BAD], cause=[0, 1])
    >>> len(b), b.value[0]
    (2, np.float64(1.5))
    """

    source_ts: np.ndarray
    server_ts: np.ndarray
    gateway_ts: np.ndarray
    point: np.ndarray
    value: np.ndarray
    quality: np.ndarray
    cause: np.ndarray

    DTYPES: ClassVar[dict[str, type]] = {
        "source_ts": np.int64,
        "server_ts": np.int64,
        "gateway_ts": np.int64,
        "point": np.int32,
        "value": np.float64,
        "quality": np.uint8,
        "cause": np.uint32,
    }

    def __len__(self) -> int:
        return len(self.point)

    @classmethod
    def of(
        cls,
        *,
        source_ts: npt.ArrayLike,
        point: npt.ArrayLike,
        value: npt.ArrayLike,
        quality: npt.ArrayLike,
        cause: npt.ArrayLike = 0,
        server_ts: npt.ArrayLike | None = None,
        gateway_ts: npt.ArrayLike | None = None,
    ) -> Batch:
        """Build a batch from array-likes, converting each column to its dtype."""
        n = len(np.atleast_1d(point))
        cols: dict[str, npt.ArrayLike] = {
            "source_ts": source_ts,
            "server_ts": source_ts if server_ts is None else server_ts,
            "gateway_ts": source_ts if gateway_ts is None else gateway_ts,
            "point": point,
            "value": value,
            "quality": quality,
            "cause": cause,
        }
        arrays: dict[str, np.ndarray] = {
            name: np.broadcast_to(np.asarray(col, dtype=cls.DTYPES[name]), (n,)).copy()
            for name, col in cols.items()
        }
        return cls(**arrays)

    @classmethod
    def empty(cls) -> Batch:
        return cls(**{name: np.empty(0, dtype=dt) for name, dt in cls.DTYPES.items()})

    @classmethod
    def concat(cls, batches: list[Batch]) -> Batch:
        if not batches:
            return cls.empty()
        return cls(
            **{name: np.concatenate([getattr(b, name) for b in batches]) for name in cls.DTYPES}
        )

    def take(self, index: np.ndarray | slice) -> Batch:
        """Rows selected by an integer or boolean index, or a slice."""
        return Batch(**{name: getattr(self, name)[index] for name in self.DTYPES})
