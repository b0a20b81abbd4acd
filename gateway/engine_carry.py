"""What a rebuilt anomaly engine keeps of the one it replaces when the site file changes while the
gateway runs (gateway.reload): everything learned of each point, device and zone that did not
change, and the alarms open on them.

The engine's state is named arrays (`Engine.state()`); which axis of an array runs over the
points, the devices or the zones is asked of the engine itself, not listed here: the state of an
engine over the same points plus one probe point (alone, on a probe device, in a probe zone)
is one longer along exactly those axes. Each such array is copied subject by subject, by
name, for the subjects kept:

- a point: same tag, same definition (kind, unit, zone, role, limits, device, ...);
- a device: same name, the same points, the same stale window;
- a zone: same name, the same points.

The engine's clock (its current tick, the gate's time) is copied; an array over none of those
axes (a model of a zone's points, of the grid's) is copied whole when no zone changed and its
shape did not; else it starts afresh. The alarm gate's open alarms and chattering records are
re-keyed to the new positions; those of subjects not kept are dropped (the alarm store keeps
them until an operator handles them). Learning restarts whole when the tick length or the
lateness changed (every learned figure is per tick), or the time zone (daily profiles and day
types are on its clock).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence

import numpy as np

from anomaly.core.points import PointInfo
from anomaly.engine import Engine, EngineSettings

PROBE = "\x00probe"
SCOPES = ("tag", "device", "zone")  # as the alarm gate names them
_TEXT = ("engine/meta", "gate/open", "gate/chattering")
_CLOCK = ("ticks/", "gate/now")  # the engine's time: the same whatever the points
_CONDITIONS = ("gate/since/", "gate/absent/")  # per kind and scope: gate/since/limit/tag


def carry_over(old: Engine, old_points: Sequence[PointInfo], new: Engine,
               new_points: Sequence[PointInfo]) -> int:
    """Load into `new` (fresh, over `new_points`) what `old` (over `old_points`) learned of
    the subjects both have alike; the number of points carried (0: `new` learns afresh).
    StateError if the engine refuses the result: `new` is then half loaded (build another)."""
    # what was learned at other tick lengths, or on another clock (its daily profiles at
    # other hours), is not carried
    if (old.settings.interval, old.settings.lateness, old.settings.time_zone) != (
            new.settings.interval, new.settings.lateness, new.settings.time_zone):
        return 0
    maps = _kept(old, old_points, new, new_points)
    zones_same = (old.table.zones == new.table.zones
                  and len(maps["zone"][0]) == len(new.table.zones))
    before, fresh = old.state(), new.state()
    axes = _axes(new_points, new.settings, fresh)
    arrays: dict[str, np.ndarray] = {}
    for name, arr in fresh.items():
        saved = before.get(name)
        if name in _TEXT or saved is None or saved.dtype.kind != arr.dtype.kind:
            arrays[name] = arr
        elif name.startswith(_CLOCK) and saved.shape == arr.shape:
            arrays[name] = saved.copy()
        else:
            arrays[name] = _copied(saved, arr, axes[name], maps, zones_same)
    # The gate's per-condition times exist once a condition of that kind and scope arose
    # (a fresh engine has none): over that scope's subjects, -1 where none.
    sizes = {"tag": len(new.table), "zone": len(new.table.zones),
             "device": len(new.table.devices)}
    for name, saved in before.items():
        if name.startswith(_CONDITIONS) and (scope := name.rsplit("/", 1)[1]) in sizes:
            arrays[name] = _copied(saved, np.full(sizes[scope], -1, saved.dtype), [scope], maps,
                                   zones_same)
    arrays["gate/open"], arrays["gate/chattering"] = _gate(before, maps)
    new.load_state(arrays, source="the engine before the change")
    return len(maps["tag"][0])


def _kept(old: Engine, old_points: Sequence[PointInfo], new: Engine,
          new_points: Sequence[PointInfo]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per scope: (old positions, new positions) of the subjects kept."""
    def members(points: Sequence[PointInfo], attr: str) -> dict[str, list[PointInfo]]:
        out: dict[str, list[PointInfo]] = {}
        for p in points:
            if (name := getattr(p, attr)) is not None:
                out.setdefault(name, []).append(p)
        return out

    def windows(e: Engine) -> Mapping[str, float]:
        return e.settings.comms_window

    before, after = {p.tag: p for p in old_points}, {p.tag: p for p in new_points}
    old_members = {a: members(old_points, a) for a in ("device", "zone")}
    new_members = {a: members(new_points, a) for a in ("device", "zone")}
    names = {"tag": (old.table.tags, new.table.tags), "device": (old.table.devices,
             new.table.devices), "zone": (old.table.zones, new.table.zones)}
    alike = {
        "tag": lambda n: before.get(n) == after.get(n),
        "device": lambda n: (old_members["device"].get(n) == new_members["device"].get(n)
                             and windows(old).get(n) == windows(new).get(n)),
        "zone": lambda n: old_members["zone"].get(n) == new_members["zone"].get(n),
    }
    out = {}
    for scope, (was, now) in names.items():
        position = {n: i for i, n in enumerate(was)}
        pairs = [(position[n], j) for j, n in enumerate(now) if n in position and alike[scope](n)]
        out[scope] = (np.array([a for a, _ in pairs], np.intp),
                      np.array([b for _, b in pairs], np.intp))
    return out


def _axes(points: Sequence[PointInfo], settings: EngineSettings,
          fresh: Mapping[str, np.ndarray]) -> dict[str, list[str | None]]:
    """Per state array: the scope each axis runs over (None: none of them)."""
    probes = {"tag": PointInfo(PROBE), "device": PointInfo(PROBE, device=PROBE),
              "zone": PointInfo(PROBE, zone=PROBE)}
    windows = {**settings.comms_window, PROBE: 1.0}
    probing = dataclasses.replace(settings, comms_window=windows)
    grown = {scope: {k: v.shape for k, v in Engine([*points, probe], probing).state().items()}
             for scope, probe in probes.items()}
    out: dict[str, list[str | None]] = {}
    for name, arr in fresh.items():
        axes: list[str | None] = []
        for j, n in enumerate(arr.shape):
            axes.append(next((scope for scope in SCOPES  # a probe device or zone adds a point
                              if len(shape := grown[scope].get(name, ())) == arr.ndim
                              and shape[j] == n + 1), None))
        out[name] = axes
    return out


def _copied(saved: np.ndarray, fresh: np.ndarray, axes: list[str | None],
            maps: Mapping[str, tuple[np.ndarray, np.ndarray]], zones_same: bool) -> np.ndarray:
    """`fresh` with what `saved` holds of the kept subjects."""
    if not any(axes):
        return saved.copy() if saved.shape == fresh.shape and zones_same else fresh
    if any(a is None and saved.shape[j] != fresh.shape[j] for j, a in enumerate(axes)):
        return fresh
    src = saved
    for j, a in enumerate(axes):
        if a is not None:
            src = np.take(src, maps[a][0], axis=j)
    out = fresh.copy()
    out[np.ix_(*[maps[a][1] if a is not None else np.arange(n)
                 for a, n in zip(axes, fresh.shape, strict=True)])] = src
    return out


def _gate(before: Mapping[str, np.ndarray],
          maps: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """The gate's open alarms and chattering records, re-keyed to the new positions."""
    moved = {scope: dict(zip(a.tolist(), b.tolist(), strict=True))
             for scope, (a, b) in maps.items()}

    def rekey(rows: list[list]) -> list[list]:
        return [[kind, scope, moved[scope][i], *rest] for kind, scope, i, *rest in rows
                if i in moved.get(scope, {})]

    chatter = json.loads(str(before["gate/chattering"][0]))
    return (np.array([json.dumps(rekey(json.loads(str(before["gate/open"][0]))))]),
            np.array([json.dumps({k: rekey(v) for k, v in chatter.items()})]))
