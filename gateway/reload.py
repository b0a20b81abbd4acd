"""Changes of the site file applied to the running gateway (SIGHUP, `POST /api/v1/config`).

A new file is validated as `scadawatch check-config` validates it (`load_site`: the same
errors), then compared with the running site (`diff`). Settings that only a restart can change
(`RESTART_ONLY`: the data dir, the historian, the spool, the API's listener, Sparkplug) refuse
the whole change, naming the keys; so does an input that cannot be built. A refused change
changes nothing. An accepted one is applied device by device:

- The inputs run in groups, one per connection (`input_key`: a Modbus TCP endpoint or serial
  port with every unit id behind it, else one device). A group whose devices and points are
  all unchanged keeps running, its polls on the same grid: nothing is rebuilt or reconnected.
  A Modbus bus that keeps some of its devices as they were takes the others away and adds the
  new or changed ones while it runs (`ModbusBus.replace_devices`): the kept ones keep their
  schedule and connection. Any other group with a change is stopped, and one built from the
  new file started; a group of only removed devices just stops.
- Every group is built over its own points, so its batches index a list of its own; its way
  into the spool (`_GroupEmit`) maps them to the site's current point list. The switch to a new
  list is one synchronous step on the event loop, with no poll in between: the spool starts a
  new point-list generation (gateway.storage.spool), each kept group maps to it from then on, and
  a stopped group's batches are dropped from then on (a poll that was in flight: its readings
  were taken under the old definitions). So every batch spooled indexes the list it is filed
  under, and every sink (historians, InfluxDB, the engine) maps indices to tags per generation:
  no reading is filed under another point's tag. What is spooled before the switch drains as
  it was spooled, removed devices' readings included.
- The anomaly engine is rebuilt over the new points and keeps what it learned of every point,
  device and zone that did not change (gateway.engine_carry).
- The API in the same process follows the new site (points, limits, alarm settings).

Every change asked for, applied or refused, lands in the audit journal (gateway.config_audit).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import os
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np

from anomaly.core.batch import Batch
from gateway import config_audit
from gateway.config_audit import SIGHUP, AuditEntry, Outcome, Who
from gateway.site.loader import ConfigError, ConfigProblem, load_site
from gateway.site.model import Device, Point, Site, describe
from timegrammar import now_ns
from timegrammar.iso import iso

log = logging.getLogger(__name__)

Emit = Callable[[Batch], Awaitable[None]]
TaskFactory = Callable[[str, Callable[[], Awaitable[None]]], asyncio.Task]

# Keys whose change needs a restart: the files and connections the gateway opened at start.
RESTART_ONLY: tuple[tuple[str, Callable[[Site], Any]], ...] = (
    ("site.name", lambda s: s.site.name),
    ("site.data_dir", lambda s: s.site.data_dir),
    ("historian", lambda s: s.historian),
    ("spool", lambda s: s.spool),
    ("api", lambda s: s.api),
    ("northbound", lambda s: s.northbound),
    ("anomaly.enabled", lambda s: s.anomaly.enabled),
    ("webhooks", lambda s: s.webhooks),
)


class Input(Protocol):
    """A running input: a Modbus bus, an OPC UA, IEC 104 or DNP3 session."""

    name: str

    async def run(self) -> None: ...

    async def close(self) -> None: ...


BuildInputs = Callable[[Site, Emit], Sequence[Input]]
Signature = list[tuple[Device, list[Point]]]  # a group's devices and their points


def input_key(device: Device) -> str:
    """What `device` shares its connection with: a Modbus bus carries every unit id of one TCP
    endpoint or serial port; any other device has its own session."""
    if device.protocol in ("modbus-tcp", "modbus-rtu"):
        return device.bus
    return f"{device.protocol}:{device.name}"


def diff(old: Site, new: Site) -> dict[str, list[str]]:
    """What changed from `old` to `new`, by name: devices and points (by tag) added, removed
    or changed, and the other sections that changed. Empty when nothing did."""
    devices = ({d.name: d for d in old.devices}, {d.name: d for d in new.devices})
    points = ({p.tag: p for p in old.points}, {p.tag: p for p in new.points})
    out: dict[str, list[str]] = {}
    for what, (before, after) in (("devices", devices), ("points", points)):
        out[f"{what}_added"] = [n for n in after if n not in before]
        out[f"{what}_removed"] = [n for n in before if n not in after]
        out[f"{what}_changed"] = [n for n in after if n in before and after[n] != before[n]]
    out["settings_changed"] = [name for name in ("anomaly", "alarms")
                               if getattr(old, name) != getattr(new, name)]
    if [p.tag for p in old.points] != [p.tag for p in new.points] and not (
            out["points_added"] or out["points_removed"]):
        out["settings_changed"].append("point order")
    return {k: v for k, v in out.items() if v}


def restart_only(old: Site, new: Site, file: str) -> list[ConfigProblem]:
    """The changes from `old` to `new` that a running gateway cannot apply."""
    return [ConfigProblem(file=file, key=key, reason=(
                f"changed from {_shown(value(old))} to {_shown(value(new))}: takes effect on a "
                "restart only (restart the service to apply it)"))
            for key, value in RESTART_ONLY if value(old) != value(new)]


def _shown(value: object) -> str:
    if isinstance(value, Path):
        return repr(str(value))
    return describe(value) if isinstance(value, str | bool | int | float | dict | list) \
        else "its value"


class _GroupEmit:
    """A group's way into the spool: its inputs' batches index the group's own points (`tags`,
    None where a point was removed or redefined: a poll in flight under its old definition is
    dropped); `where` maps them to positions in the site's current point list. Closed (the
    group stopped), it drops whatever its inputs still emit."""

    def __init__(self, emit: Emit, tags: list[str], current: dict[str, int]) -> None:
        self._emit = emit
        self.tags: list[str | None] = list(tags)
        self.closed = False
        self._gone = False
        self.retarget(current)

    def retarget(self, current: dict[str, int]) -> None:
        where = np.array([-1 if t is None else current.get(t, -1) for t in self.tags],
                         dtype=np.int32)
        self._gone = bool((where < 0).any())
        # The same positions (a site of one group): batches pass as they are.
        self.where = None if np.array_equal(where, np.arange(len(current))) else where

    async def __call__(self, batch: Batch) -> None:
        if self.closed:
            return
        if self.where is not None:
            point = self.where[batch.point]
            if self._gone:
                keep = point >= 0
                if not keep.all():
                    batch, point = batch.take(keep), point[keep]
            b = batch
            batch = Batch(b.source_ts, b.server_ts, b.gateway_ts, point, b.value, b.quality,
                          b.cause)
        await self._emit(batch)


@dataclass(eq=False)
class _Group:
    key: str
    signature: Signature
    emit: _GroupEmit
    inputs: Sequence[Input]
    tasks: list[asyncio.Task] = field(default_factory=list)


async def _discard(batch: Batch) -> None:
    """Where the inputs built only for their devices would emit: they never run."""


def _signatures(site: Site) -> dict[str, Signature]:
    """Per group: its devices with their points, in file order (the site's own objects: a
    group holds references, and `==` compares every field)."""
    points: dict[str, list[Point]] = {}
    for p in site.points:
        if p.device is not None:
            points.setdefault(p.device, []).append(p)
    out: dict[str, Signature] = {}
    for d in site.devices:
        out.setdefault(input_key(d), []).append((d, points.get(d.name, [])))
    return out


class Inputs:
    """The site's inputs, in groups that start and stop independently (see the module doc)."""

    def __init__(self, site: Site, build: BuildInputs, emit: Emit) -> None:
        self._build, self._emit = build, emit
        self._task: TaskFactory | None = None
        self.groups = self.build(site)

    def build(self, site: Site, keys: Iterable[str] | None = None) -> dict[str, _Group]:
        """Groups of `site` (those of `keys`; default all), not started. Each is built over
        a copy of the site holding its devices and their points only."""
        signatures = _signatures(site)
        current = {p.tag: i for i, p in enumerate(site.points)}
        out = {}
        for key in signatures if keys is None else keys:
            devices = [d for d, _ in signatures[key]]
            own = [p for _, points in signatures[key] for p in points]
            emit = _GroupEmit(self._emit, [p.tag for p in own], current)
            inputs = self._build(site.model_copy(update={"devices": devices, "points": own}),
                                 emit)
            out[key] = _Group(key, signatures[key], emit, inputs)
        return out

    def build_over(self, site: Site) -> Sequence[Input]:
        """Inputs for `site` whose batches go nowhere (their devices join running ones)."""
        return self._build(site, _discard)

    def __iter__(self) -> Iterator[Input]:
        return (i for g in self.groups.values() for i in g.inputs)

    def __len__(self) -> int:
        return sum(len(g.inputs) for g in self.groups.values())

    def start(self, task: TaskFactory | None = None) -> None:
        """Start the groups not yet running, each input as a task made by `task` (kept for
        the groups a reload adds)."""
        self._task = task or self._task
        assert self._task is not None
        for g in self.groups.values():
            if not g.tasks:
                g.tasks = [self._task(f"poller:{i.name}", i.run) for i in g.inputs]

    async def stop(self, groups: Iterable[_Group] | None = None) -> None:
        """Stop `groups` (default: every running one) and close their connections."""
        groups = list(self.groups.values() if groups is None else groups)
        tasks = [t for g in groups for t in g.tasks]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for g in groups:
            for i in g.inputs:
                await i.close()


class Running(Protocol):
    """What a reload changes of the running gateway (gateway.runtime.Gateway)."""

    site: Site
    inputs: Inputs

    def switch_points(self, site: Site) -> None:
        """Make `site`'s point list the spool's and the sinks' (synchronous: see apply)."""

    def forget(self, devices: Iterable[str], tasks: Iterable[str]) -> None:
        """Drop the status entries of devices and tasks that no longer run."""

    async def follow(self, site: Site) -> None:
        """Let the rest (the anomaly engine, listeners such as the API) follow `site`."""


class Regrouping(Protocol):
    """An input of several devices that can take some away and add others while it runs
    (a Modbus bus: every unit id behind one endpoint)."""

    def replace_devices(self, keep: Collection[str], add: Any) -> None: ...


@dataclass(frozen=True)
class _Update:
    """A running group that keeps its connection: `keep` polled on, `add` (built for the
    same link, indexing the group's points from `first`) joins it."""

    keep: list[str]
    add: Input | None
    first: int
    tags: list[str]


@dataclass(frozen=True)
class Prepared:
    """A change ready to apply: the new site, what changed, the groups built for it."""

    site: Site
    change: dict[str, list[str]]
    stale: list[str]  # groups to stop
    built: dict[str, _Group]  # groups to start
    updates: dict[str, _Update]  # groups changed in place


def prepare(gw: Running, new: Site) -> Prepared:
    """Build what `new` needs beyond what runs; raises (ValueError, OSError) if an input
    cannot be built: nothing has changed then."""
    running = gw.inputs.groups
    wanted = _signatures(new)
    changed = [k for k, g in running.items() if wanted.get(k) != g.signature]
    updates = {}
    for key in changed:
        if (update := _update(gw.inputs, running[key], wanted.get(key, []), new)) is not None:
            updates[key] = update
    stale = [k for k in changed if k not in updates]
    fresh = [k for k in wanted if k not in running or k in stale]
    return Prepared(new, diff(gw.site, new), stale, gw.inputs.build(new, fresh), updates)


def _update(inputs: Inputs, group: _Group, wanted: Signature, new: Site) -> _Update | None:
    """How `group` takes `wanted` without reconnecting; None if it cannot (not one input
    that regroups, no device kept, or the link's own settings changed)."""
    if len(group.inputs) != 1 or not hasattr(group.inputs[0], "replace_devices"):
        return None
    before = {d.name: (d, points) for d, points in group.signature}
    keep = [d.name for d, points in wanted if before.get(d.name) == (d, points)]
    if not keep or (max(d.connections for d, _ in wanted)
                    != max(d.connections for d, _ in group.signature)):
        return None
    added = [d for d, _ in wanted if d.name not in keep]
    names = {d.name for d in added}
    own = [p for p in new.points if p.device in names]
    first = len(group.emit.tags)
    # Built over as many placeholders (points no device polls) as the group has points, then
    # the added ones: the new devices' indices follow the group's own.
    padding = [dataclasses.replace(own[0], device=None)] * first if own and first else []
    built = inputs.build_over(new.model_copy(update={"devices": added,
                                                     "points": padding + own}))
    if len(built) != (1 if own else 0):
        return None
    return _Update(keep, built[0] if built else None, first, [p.tag for p in own])


async def apply(gw: Running, plan: Prepared) -> None:
    """Switch `gw` to `plan.site`: kept groups keep polling, stale ones stop, new ones start."""
    inputs, new = gw.inputs, plan.site
    old_groups = [inputs.groups.pop(k) for k in plan.stale]
    # One synchronous step (no await): no batch reaches the spool between the new point list
    # and the groups' new mapping to it.
    current = {p.tag: i for i, p in enumerate(new.points)}
    for g in old_groups:
        g.emit.closed = True
    wanted = _signatures(new)
    for key, update in plan.updates.items():
        g = inputs.groups[key]
        kept = {p.tag for p in gw.site.points if p.device in update.keep}
        g.emit.tags = [t if t in kept else None for t in g.emit.tags] + list(update.tags)
        cast(Regrouping, g.inputs[0]).replace_devices(update.keep, update.add)
        g.signature = wanted[key]
    for g in inputs.groups.values():
        g.emit.retarget(current)
    gw.switch_points(new)
    old_site, gw.site = gw.site, new
    inputs.groups.update(plan.built)
    await inputs.stop(old_groups)  # before the new start: a serial port has one owner
    names = {d.name for d in new.devices}
    running = {i.name for i in inputs}
    gw.forget([d.name for d in old_site.devices if d.name not in names],
              [f"poller:{i.name}" for g in old_groups for i in g.inputs
               if i.name not in running])
    inputs.start()
    await gw.follow(new)


@dataclass(frozen=True)
class Result:
    """What became of a change asked for."""

    outcome: Outcome
    change: dict[str, list[str]] = field(default_factory=dict)
    problems: list[ConfigProblem] = field(default_factory=list)


class Reloader:
    """Re-reads the site file at `path` (SIGHUP) or takes a new one (the API), validates it,
    applies it to `gw` and journals it; one change at a time."""

    def __init__(self, gw: Running, path: Path) -> None:
        self.gw = gw
        self.path = Path(path)
        self._lock = asyncio.Lock()
        self._closed = False

    async def close(self) -> None:
        """Refuse changes from now on (the gateway is stopping), once the one in progress is
        applied."""
        async with self._lock:
            self._closed = True

    def current_text(self) -> bytes:
        return self.path.read_bytes()

    async def reload_file(self, who: Who = SIGHUP) -> Result:
        """Apply the site file as it is on disk now."""
        async with self._lock:
            try:
                text = self.path.read_bytes()
            except OSError as e:
                text = b""
                problem = ConfigProblem(file=str(self.path), key="", reason=str(e.strerror or e))
                return self._refused(who, text, [problem])
            return await self._change(who, text, self.path, replace=False)

    async def apply_text(self, text: bytes, who: Who) -> Result:
        """Apply `text` as the new site file: validated beside the site file (so relative
        paths resolve as they would there), which it replaces once it is accepted."""
        async with self._lock:
            posted = self.path.with_name(f".{self.path.name}.{os.getpid()}.posted")
            try:
                await asyncio.to_thread(_write_synced, posted, text)
            except OSError as e:
                return self._refused(who, text, [ConfigProblem(
                    file=str(self.path), key="", reason="cannot write beside the site file "
                    f"(the gateway replaces it): {e.strerror or e}")])
            try:
                return await self._change(who, text, posted, replace=True)
            finally:
                with contextlib.suppress(OSError):
                    posted.unlink()

    async def _change(self, who: Who, text: bytes, file: Path, *, replace: bool) -> Result:
        shown = str(self.path)
        if self._closed:
            return self._refused(who, text, [ConfigProblem(
                file=shown, key="", reason="the gateway is stopping: apply it once it runs")])
        try:
            new = await asyncio.to_thread(load_site, file)
        except ConfigError as e:
            return self._refused(who, text, [
                p.model_copy(update={"file": shown}) if p.file == str(file) else p
                for p in e.problems])
        if problems := restart_only(self.gw.site, new, shown):
            return self._refused(who, text, problems)
        if new == self.gw.site:
            self._journal(who, text, "unchanged")
            return Result("unchanged")
        try:
            plan = prepare(self.gw, new)
        except (ValueError, OSError) as e:
            running = {d.name for d in self.gw.site.devices}
            self.gw.forget([d.name for d in new.devices if d.name not in running], [])
            return self._refused(who, text, [ConfigProblem(file=shown, key="", reason=str(e))])
        if replace:
            os.replace(file, self.path)  # the file stays what runs
        self._journal(who, text, "applied", plan.change)
        await apply(self.gw, plan)
        log.info("event=config_applied who=%s %s", who.name,
                 " ".join(f"{k}={','.join(v)}" for k, v in plan.change.items()))
        return Result("applied", plan.change)

    def _refused(self, who: Who, text: bytes, problems: list[ConfigProblem]) -> Result:
        self._journal(who, text, "refused", errors=[str(p) for p in problems])
        log.warning("event=config_refused who=%s problems=%d first=%r", who.name, len(problems),
                    str(problems[0]))
        return Result("refused", problems=problems)

    def _journal(self, who: Who, text: bytes, outcome: Outcome,
                 change: dict[str, list[str]] | None = None,
                 errors: list[str] | None = None) -> None:
        config_audit.append(self.gw.site.site.data_dir, AuditEntry(
            at=iso(now_ns(), "ms"), who=who.name, role=who.role,
            via="sighup" if who is SIGHUP else "api", outcome=outcome,
            sha256=hashlib.sha256(text).hexdigest(), changes=change or {}, errors=errors or []))


def _write_synced(path: Path, text: bytes) -> None:
    with open(path, "wb") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def install_reload_signal(reloader: Reloader) -> None:
    """SIGHUP re-reads the site file (main thread only, as signals are)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    pending: set[asyncio.Task] = set()

    def hup() -> None:
        task = loop.create_task(reloader.reload_file())
        pending.add(task)
        task.add_done_callback(pending.discard)

    with contextlib.suppress(NotImplementedError):
        loop.add_signal_handler(signal.SIGHUP, hup)
