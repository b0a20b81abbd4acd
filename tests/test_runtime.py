"""The gateway process around its parts: what survives a change of the site file."""

from __future__ import annotations

from pathlib import Path

from anomaly.batch import Batch, Quality
from gateway.config import Point, Site, SiteSection
from gateway.historian import EmbeddedHistorian
from gateway.runtime import Gateway, historian_path


def site(tmp_path: Path, tags: list[str]) -> Site:
    return Site(site=SiteSection(name="t", data_dir=tmp_path),
                points=[Point(tag=t) for t in tags])


def test_backlog_spooled_under_the_old_point_list_lands_on_its_own_tags(tmp_path: Path) -> None:
    old = site(tmp_path, ["a", "b", "c"])
    gateway = Gateway(old)
    # Spooled but not yet stored when the gateway stopped: value = 10 * point index + 1.
    gateway.spool.append(Batch.of(source_ts=[1, 1, 1], point=[0, 1, 2], value=[1, 11, 21],
                                  quality=Quality.GOOD))
    gateway.spool.close()
    gateway.historian.close()

    # The engineer reorders the points and adds one; the backlog must keep its tags.
    new = site(tmp_path, ["c", "new", "a", "b"])
    restarted = Gateway(new)
    restarted.spool.close()
    restarted.historian.close()
    reader = EmbeddedHistorian(historian_path(new), ["a", "b", "c", "new"], readonly=True)
    values = {tag: reader.history(tag, 0, 10).value.tolist() for tag in ["a", "b", "c", "new"]}
    reader.close()
    assert values == {"a": [1.0], "b": [11.0], "c": [21.0], "new": []}
