"""The alarm store on a real SQLite file: engine events applied idempotently, shelving and
suppression, the journal surviving a writer killed with SIGKILL, and the EEMUA 191 KPIs on a
flood of 1,000 alarms."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.alarm_helpers import NS, T0, alarm, cleared, raised
from support.harness import RUN_LIMIT

from gateway.alarms.kpis import kpis
from gateway.alarms.store import AlarmStore, Filter, run_unshelve_timer
from gateway.site.model import AlarmsSection
from timegrammar.iso import iso

ROOT = Path(__file__).resolve().parents[3]
MIN = 60 * NS


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AlarmStore]:
    s = AlarmStore(tmp_path / "alarms.sqlite")
    yield s
    s.close()


def journal(store: AlarmStore) -> list[tuple[int, str | None, str, str]]:
    return [(e.seq, e.alarm_id, e.transition, e.who) for e in store.events_after(0, 10**6)]


def test_reapplied_events_change_nothing(store: AlarmStore, tmp_path: Path) -> None:
    a, b = alarm("leak", "dma1"), alarm("stuck", "dma1.p1", scope="tag")
    events = [raised(a), raised(b), cleared(a)]
    assert store.apply(events, now_ns=T0) == 3
    before = journal(store), store.alarms(Filter(shelved=None), now_ns=T0)
    # The gateway re-applies after a crash, maybe from a new process: same ids, no change.
    assert store.apply(events, now_ns=T0 + NS) == 0
    again = AlarmStore(tmp_path / "alarms.sqlite")
    assert again.apply([*events, raised(a)], now_ns=T0 + 2 * NS) == 0
    assert (journal(again), again.alarms(Filter(shelved=None), now_ns=T0)) == before
    assert [t for _, _, t, _ in before[0]] == ["raise", "raise", "clear"]
    again.close()


def test_a_clear_whose_raise_was_lost_is_recorded_as_both(store: AlarmStore) -> None:
    a = alarm()
    store.apply([cleared(a)], now_ns=T0)
    assert [t for _, _, t, _ in journal(store)] == ["raise", "clear"]
    assert store.get(a.id)["state"] == "cleared-unacknowledged"
    assert store.get(a.id)["end"] == iso(a.start_ns + MIN, "ms")


def test_list_is_sorted_by_priority_then_newest(store: AlarmStore) -> None:
    made = [alarm("drift", "t1", T0, scope="tag"), alarm("leak", "dma1", T0 + NS),
            alarm("line_outage", "f1", T0), alarm("leak", "dma2", T0 + 2 * NS),
            alarm("comms", "plc1", T0 + 3 * NS, scope="device")]
    store.apply([raised(a) for a in made], now_ns=T0)
    ids = [a["id"] for a in store.alarms(now_ns=T0)[0]]
    assert ids == [made[2].id, made[3].id, made[1].id, made[4].id, made[0].id]


def test_a_shelf_hides_the_alarm_and_repeats_of_its_condition_until_it_expires(
        store: AlarmStore) -> None:
    first = alarm("spike", "dma1.p1", T0, scope="tag")
    store.apply([raised(first)], now_ns=T0)
    store.shelve(first.id, "op1", "sensor being replaced", 10 * MIN, now_ns=T0 + MIN)
    repeat = alarm("spike", "dma1.p1", T0 + 2 * MIN, scope="tag")
    other = alarm("spike", "dma1.p2", T0 + 2 * MIN, scope="tag")
    store.apply([cleared(first), raised(repeat), raised(other)], now_ns=T0 + 2 * MIN)
    visible = [a["id"] for a in store.alarms(now_ns=T0 + 3 * MIN)[0]]
    assert visible == [other.id]
    shelved = store.alarms(Filter(shelved=True), now_ns=T0 + 3 * MIN)[0]
    assert {a["id"] for a in shelved} == {first.id, repeat.id}
    assert {a["shelve_reason"] for a in shelved} == {"sensor being replaced"}
    assert not store.get(repeat.id)["annunciated"]
    # At expiry the views show it at once; the timer journals it.
    after = T0 + 11 * MIN + 1
    assert {a["id"] for a in store.alarms(now_ns=after)[0]} == {first.id, repeat.id, other.id}
    assert store.unshelve_expired(now_ns=after) == 2
    assert store.unshelve_expired(now_ns=after) == 0
    expiries = [e for e in store.events_after(0) if e.transition == "unshelve"]
    assert {(e.alarm_id, e.who, e.comment) for e in expiries} == {
        (first.id, "system", "shelf expired"), (repeat.id, "system", "shelf expired")}


def test_the_unshelve_timer_journals_expiry(store: AlarmStore) -> None:
    a = alarm("spike", "timer.p1", scope="tag")
    store.apply([raised(a)])
    store.shelve(a.id, "op1", "brief", 1)  # 1 ns: expired at the timer's first look

    async def until_unshelved() -> None:
        stop = asyncio.Event()
        timer = asyncio.create_task(run_unshelve_timer(store, stop, interval=0.05))
        deadline = time.monotonic() + RUN_LIMIT
        while store.history(a.id)[-1].transition != "unshelve":
            assert time.monotonic() < deadline and not timer.done()
            await asyncio.sleep(0.02)
        stop.set()
        await timer

    asyncio.run(until_unshelved())
    assert (store.history(a.id)[-1].who, store.get(a.id)["shelved"]) == ("system", False)


@pytest.mark.parametrize("scope,name", [("tag", "dma1.p1"), ("zone", "dma1")])
def test_suppression_records_alarms_but_hides_them(store: AlarmStore, scope: str,
                                                   name: str) -> None:
    before = alarm("drift", "dma1.p1", T0, scope="tag")
    elsewhere = alarm("drift", "dma2.p1", T0, scope="tag")
    store.apply([raised(before), raised(elsewhere)], now_ns=T0)
    store.suppress(scope, name, "op1", "maintenance", now_ns=T0 + MIN)  # type: ignore[arg-type]
    during = alarm("stuck", "dma1.p1", T0 + 2 * MIN, scope="tag")
    store.apply([raised(during)], now_ns=T0 + 2 * MIN)
    assert [a["id"] for a in store.alarms(now_ns=T0 + 3 * MIN)[0]] == [elsewhere.id]
    hidden = store.alarms(Filter(suppressed=True), now_ns=T0 + 3 * MIN)[0]
    assert {a["id"] for a in hidden} == {before.id, during.id}
    assert store.get(before.id)["annunciated"] and not store.get(during.id)["annunciated"]
    store.unsuppress(scope, name, "op2", now_ns=T0 + 4 * MIN)  # type: ignore[arg-type]
    assert len(store.alarms(now_ns=T0 + 5 * MIN)[0]) == 3
    rule_events = [(e.transition, e.who, e.data.get("active")) for e in store.events_after(0)
                   if e.alarm_id is None]
    assert rule_events == [("suppression", "op1", True), ("suppression", "op2", False)]


WRITER = """
import sys, time
sys.path.insert(0, {tests!r})
from support.alarm_helpers import NS, T0, alarm, cleared, raised
from gateway.alarms.store import AlarmStore
store = AlarmStore({path!r})
for i in range(100_000):
    a = alarm("leak", f"dma{{i}}", T0 + i * NS)
    store.apply([raised(a), cleared(a)] if i % 2 else [raised(a)])
    print(i, flush=True)  # after the commit: this apply is durable
"""


def test_journal_survives_kill_9_of_the_writer(tmp_path: Path) -> None:
    path = tmp_path / "alarms.sqlite"
    code = WRITER.format(tests=str(ROOT / "tests"), path=str(path))
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + RUN_LIMIT
    done = -1
    while done < 200 and time.monotonic() < deadline:
        done = int(proc.stdout.readline())
    proc.kill()  # SIGKILL, mid-transaction most likely
    proc.wait(timeout=RUN_LIMIT)
    assert done >= 200, "the writer was too slow"
    store = AlarmStore(path)
    alarms, total = store.alarms(Filter(shelved=None), limit=10**6)
    assert total >= done + 1  # every apply it reported is there (maybe one more)
    entries = store.events_after(0, 10**6)
    assert [e.seq for e in entries] == list(range(1, len(entries) + 1))
    assert len(entries) == sum(1 if a["active"] else 2 for a in alarms)
    n = total
    for i in range(n):  # each alarm whole: its raise, and its clear when it had one
        got = [e.transition for e in store.history(f"leak:dma{i}:{(T0 + i * NS) // NS}")]
        assert got == (["raise", "clear"] if i % 2 else ["raise"]), i
    store.close()


# --- KPIs ------------------------------------------------------------------------------------

FLOOD = 1000
CONDITIONS = 100
PRIORITIES = ("low", "medium", "high", "critical")


@pytest.fixture(scope="module")
def flooded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AlarmStore, list[int]]]:
    """1,000 alarms raised in 10 s, one every 10 ms: 100 conditions (leaks in zones z000 to
    z099) raised once a second each (the engine's ids allow no more), priorities in turn."""
    store = AlarmStore(tmp_path_factory.mktemp("flood") / "alarms.sqlite")
    times = [T0 + i * 10_000_000 for i in range(FLOOD)]
    for i, t in enumerate(times):
        a = alarm("leak", f"z{i % CONDITIONS:03d}", t, priority=PRIORITIES[i % 4])
        store.apply([raised(a)], now_ns=t)
    yield store, times
    store.close()


SETTINGS = AlarmsSection()


def test_kpis_of_a_flood_of_1000_alarms_in_10_s(flooded: tuple[AlarmStore, list[int]]) -> None:
    store, times = flooded
    now = times[-1] + 1
    k = kpis(store, SETTINGS, now - 3600 * NS, now)
    assert k["raised"] == FLOOD
    assert k["rate"]["current"] == FLOOD
    assert k["rate"]["max"] == FLOOD  # T0 is on a 10-minute boundary: one bucket holds all
    assert sum(b["count"] for b in k["rate"]["series"]) == FLOOD
    assert k["flood"]["active"]
    assert k["flood"]["since"] == iso(times[10], "ms")  # the 11th alarm within 10 minutes
    assert [(t["zone"], t["count"]) for t in k["top"]] == [(f"z{i:03d}", 10) for i in range(10)]
    assert len(k["chattering"]) == CONDITIONS
    assert {c["max_in_window"] for c in k["chattering"]} == {10}  # all 10 within 10 s
    assert {p: m["count"] for p, m in k["priority_mix"].items()} == dict.fromkeys(
        PRIORITIES, FLOOD // 4)
    assert k["standing"] == {"active": FLOOD, "unacknowledged": FLOOD, "shelved": 0,
                             "suppressed": 0}
    assert k["stale"]["count"] == 0


def test_flood_ends_once_fewer_than_5_remain_in_the_window(
        flooded: tuple[AlarmStore, list[int]]) -> None:
    store, times = flooded
    window = int(SETTINGS.window * NS)
    # The count falls below 5 when the 996th alarm (index 995) leaves the window.
    ends = times[FLOOD - 5] + window
    during = kpis(store, SETTINGS, T0 - 3600 * NS, ends - 1)
    assert during["flood"]["active"] and during["rate"]["current"] == 5
    after = kpis(store, SETTINGS, T0 - 3600 * NS, ends + 1)
    assert not after["flood"]["active"]
    assert after["flood"]["episodes"] == [{"start": iso(times[10], "ms"), "end": iso(ends, "ms"),
                                           "peak": FLOOD}]


@pytest.mark.parametrize(("section", "stale"), [
    ({}, [0]),  # a day by default
    ({"stale_alarm_after": "20h"}, [0, 1]),
    ({"stale_after": 72000.0}, [0, 1]),  # its old name reads the same
    ({"stale_alarm_after": "2d"}, []),
], ids=["default", "set", "old-name", "longer"])
def test_stale_and_quiet_conditions(store: AlarmStore, section: dict, stale: list[int]) -> None:
    raised_at = [T0, T0 + 3 * 3600 * NS, T0 + 25 * 3600 * NS]
    alarms = [alarm("comms", "plc1", raised_at[0], scope="device"),
              alarm("limit", "dma1.pressure", raised_at[1], scope="tag"),
              alarm("leak", "dma1", raised_at[2])]
    for a, t in zip(alarms, raised_at, strict=True):
        store.apply([raised(a)], now_ns=t)
    settings = AlarmsSection.model_validate(section, strict=True)
    k = kpis(store, settings, T0, T0 + 26 * 3600 * NS)
    assert k["stale"]["after_seconds"] == settings.stale_alarm_after
    assert k["stale"]["ids"] == [alarms[i].id for i in stale]
    assert not k["flood"]["active"] and k["flood"]["episodes"] == []
    assert k["chattering"] == []
