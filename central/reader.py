"""The historian reader (`gateway.historian.HistorianReader`) the central API reads: every
site's (its embedded historian, or its series in the central's InfluxDB), its tags seen as
`<site>/<tag>`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from anomaly.core.batch import Batch
from gateway.storage.historian import Buckets, HistorianReader


class SiteReader(HistorianReader, Protocol):
    """A site's reader, opened with its tags as they are now."""

    tags: list[str]

    def close(self) -> None: ...


class CentralReader:
    """Over every site's reader (`readers`: node -> reader, in order); `tags` lists their tags
    prefixed, and batches' `point` index that list."""

    def __init__(self, readers: dict[str, SiteReader]) -> None:
        self.tags: list[str] = []
        self._readers = readers
        self._offset: dict[str, int] = {}
        for node, reader in readers.items():
            self._offset[node] = len(self.tags)
            self.tags += [f"{node}/{t}" for t in reader.tags]

    def _split(self, tag: str) -> tuple[SiteReader, str, int]:
        node, _, local = tag.partition("/")
        if node not in self._readers:
            raise KeyError(f"unknown tag {tag!r}")
        reader = self._readers[node]
        return reader, local, self._offset[node] + reader.tags.index(local)

    def latest(self, tags: Sequence[str] | None = None) -> Batch:
        wanted: dict[str, list[str]] = {}
        for tag in self.tags if tags is None else tags:
            node, _, local = tag.partition("/")
            if node not in self._readers:
                raise KeyError(f"unknown tag {tag!r}")
            wanted.setdefault(node, []).append(local)
        parts = []
        for node, local in wanted.items():
            b = self._readers[node].latest(local)
            parts.append(Batch(**{k: getattr(b, k) for k in Batch.DTYPES if k != "point"},
                               point=(b.point + self._offset[node]).astype(np.int32)))
        return Batch.concat(parts)

    def history(self, tag: str, start_ns: int, end_ns: int, limit: int | None = None) -> Batch:
        reader, local, point = self._split(tag)
        b = reader.history(local, start_ns, end_ns, limit)
        return Batch(**{k: getattr(b, k) for k in Batch.DTYPES if k != "point"},
                     point=np.full(len(b), point, np.int32))

    def buckets(self, tag: str, start_ns: int, end_ns: int, width_ns: int) -> Buckets:
        reader, local, _ = self._split(tag)
        return reader.buckets(local, start_ns, end_ns, width_ns)

    def close(self) -> None:
        for r in self._readers.values():
            r.close()
