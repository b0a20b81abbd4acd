"""The central's readings in InfluxDB (`[historian] kind = "influxdb"` in the central file):
every site's in one database or bucket, in the gateways' schema (gateway.storage.influxdb) with
the site as a tag key, `site`: a site's tag `t` is the series `tag=t,site=<site>`, and the
central's history API reads it back with that site's `InfluxReader`.

A DDATA sent again overwrites itself (same series key and source time), so the record ranges
stored (`<data_dir>/sites/<site>/progress.json`) are saved after the write, not with it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from anomaly.core.batch import Batch
from gateway.site.model import HistorianSection, Point, Site, SiteSection
from gateway.status import SinkStatus
from gateway.storage.influxdb.sink import LineWriter, SeriesKeys, line_protocol, precision_of
from gateway.storage.spool import PointList


class CentralInflux:
    """Writes each site's readings; raises InfluxUnavailable or InfluxRejected (the central
    keeps them and retries at its next flush)."""

    def __init__(self, settings: HistorianSection, status: SinkStatus, quarantine: Path) -> None:
        self.settings = settings
        self.lines = LineWriter(settings, status, quarantine)
        self._keys: dict[tuple[str, int], SeriesKeys] = {}

    def site(self, node: str, points: Sequence[Point]) -> Site:
        """The site as the InfluxDB sink and reader know one: its points, this database."""
        return Site(site=SiteSection(name=node), historian=self.settings, points=list(points))

    def store(self, node: str, batch: Batch, points: PointList) -> None:
        """`batch`'s readings (their indices into `points`), in requests of `batch_size`."""
        key = (node, points.first_seq)
        keys = self._keys.get(key)
        if keys is None:
            keys = self._keys[key] = SeriesKeys.of(self.site(node, points.points),
                                                   points.points, site_tag=node)
        size = self.settings.batch_size
        for a in range(0, len(batch), size):
            part = batch.take(slice(a, a + size))
            precision = precision_of(part.source_ts)
            self.lines.send(line_protocol(keys, part, precision.ns,
                                          self.settings.timestamp_fields), precision)

    def close(self) -> None:
        self.lines.close()
