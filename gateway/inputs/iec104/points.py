"""Which site point an information object is: by common address, type family and IOA.

A point names its IOA and optionally its `typeid`; without one it takes any monitored type
at that address. Look-ups are vectorised: one `np.searchsorted` per (common address, family)
for the IOAs of a whole batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gateway.site.model import IEC_FAMILY, Device, Point

Key = tuple[int, str | None]  # (common address, type family or None for any)


class PointMap:
    """Site point index of (common address, family, IOA), -1 where no point is configured."""

    def __init__(self, device: Device, points: Sequence[tuple[int, Point]]) -> None:
        grouped: dict[Key, list[tuple[int, int]]] = {}
        for index, p in points:
            ca = p.common_address if p.common_address is not None else device.common_address
            family = IEC_FAMILY[p.typeid] if p.typeid is not None else None
            assert p.ioa is not None, "the site checks require an ioa"
            grouped.setdefault((ca, family), []).append((p.ioa, index))
        self._tables: dict[Key, tuple[np.ndarray, np.ndarray]] = {}
        for key, pairs in grouped.items():
            pairs.sort()
            self._tables[key] = (np.array([a for a, _ in pairs], np.uint32),
                                 np.array([i for _, i in pairs], np.int32))
        self.common_addresses = sorted({ca for ca, _ in self._tables})
        self.indices = np.array(sorted(i for i, _ in points), np.int32)

    def locate(self, ca: int, family: str, ioa: np.ndarray) -> np.ndarray:
        out = np.full(len(ioa), -1, np.int32)
        for key in ((ca, family), (ca, None)):
            table = self._tables.get(key)
            if table is None:
                continue
            addresses, index = table
            at = np.minimum(np.searchsorted(addresses, ioa), len(addresses) - 1)
            hit = (addresses[at] == ioa) & (out < 0)
            out[hit] = index[at[hit]]
        return out
