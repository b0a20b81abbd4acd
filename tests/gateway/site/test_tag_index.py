"""`TagIndex`: every tag of a site found at its position, any other name not found (the API's
404 for an unknown tag, the history readers' positions)."""

from __future__ import annotations

import pytest

from gateway.site.model import Point
from gateway.site.tag_index import PointTags, TagIndex


@pytest.mark.parametrize(("tags", "absent"), [
    ([], ["a"]),
    (["a"], ["", "b", "a "]),
    # a tag that prefixes others, in and out of point order
    (["pump.run", "pump", "pump.run.fb", "Pump"], ["pum", "pump.", "pump.run.f", "PUMP"]),
    # names sorting around each other by code point, not as a person would
    (["b-2", "b_1", "b.3", "B", "é", "z", "ä1"], ["b", "b-", "ä", "ę"]),
    ([f"plc{i % 7}.f{i}" for i in range(500)], ["plc0.f1", "plc7.f0", "plc3.f500"]),
])
def test_each_tag_at_its_position_and_no_other_name(tags: list[str], absent: list[str]) -> None:
    index = TagIndex(tags)
    assert [index.get(t) for t in tags] == list(range(len(tags)))
    assert [index[t] for t in tags] == list(range(len(tags)))
    assert all(t in index for t in tags)
    assert [index.get(t) for t in absent] == [None] * len(absent)
    assert [index.get(t, -1) for t in absent] == [-1] * len(absent)
    assert not any(t in index for t in [*absent, 1, None])
    for t in absent:
        with pytest.raises(KeyError):
            index[t]


def test_points_tags_read_from_the_points() -> None:
    points = [Point(tag="b", device="d"), Point(tag="a")]
    tags = PointTags(points)
    assert (len(tags), list(tags), TagIndex(tags).get("a")) == (2, ["b", "a"], 1)
