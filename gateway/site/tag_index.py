"""Tag -> position in a site's point list, without a dict per holder.

A dict of 50,000 tags costs 3.3 MB (its table and an int object per position above 256), and
the API and the history readers each held one in the running gateway. `TagIndex` keeps the
positions in tag order (4 bytes each: 0.2 MB) and finds a tag by binary search over the tags
it is given (~2 us; an API request looks up a few).
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Sequence
from typing import TYPE_CHECKING, overload

if TYPE_CHECKING:
    from gateway.site.model import Point


class TagIndex:
    """Positions of `tags` (unique, as a site's are) by tag; the sequence is read, not copied.

    >>> index = TagIndex(["p2", "p1"])
    >>> index.get("p1"), index.get("p3"), "p2" in index, index["p2"]
    (1, None, True, 0)
    """

    def __init__(self, tags: Sequence[str]) -> None:
        self._tags = tags
        self._order = array("i", sorted(range(len(tags)), key=tags.__getitem__))

    @overload
    def get(self, tag: str) -> int | None: ...
    @overload
    def get(self, tag: str, default: int) -> int: ...

    def get(self, tag: str, default: int | None = None) -> int | None:
        at = bisect_left(self._order, tag, key=self._tags.__getitem__)
        if at < len(self._order) and self._tags[i := self._order[at]] == tag:
            return i
        return default

    def __getitem__(self, tag: str) -> int:
        if (i := self.get(tag)) is None:
            raise KeyError(tag)
        return i

    def __contains__(self, tag: object) -> bool:
        return isinstance(tag, str) and self.get(tag) is not None

    def __len__(self) -> int:
        return len(self._order)


class PointTags(Sequence[str]):
    """The tags of `points`, read from the points when asked (no list of its own)."""

    def __init__(self, points: Sequence[Point]) -> None:
        self._points = points

    def __len__(self) -> int:
        return len(self._points)

    def __getitem__(self, i: int) -> str:  # type: ignore[override]  # no slices
        return self._points[i].tag
