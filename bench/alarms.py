"""The alarm store under a flood: 1,000 alarms applied one transaction each (the worst case: one
per engine tick) and in one transaction; the list the control room asks for; KPIs over the
flood and over a month of history; event-stream reads.

    python -m bench.alarms
    python -m bench.alarms --history 100000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from anomaly.core.alarms import PRIORITIES, Alarm, AlarmEvent
from gateway.alarms.kpis import kpis
from gateway.alarms.store import AlarmStore, Filter
from gateway.site.model import AlarmsSection

NS = 1_000_000_000
T0 = 1_767_600_000 * NS
T = TypeVar("T")


def events(n: int, start_ns: int, spacing_ns: int, prefix: str) -> list[AlarmEvent]:
    return [AlarmEvent("raise", Alarm(
        id=f"leak:{prefix}{i % 100}:{(start_ns + i * spacing_ns) // NS}.{i}", kind="leak",
        tag=None, zone=f"{prefix}{i % 100}", start_ns=start_ns + i * spacing_ns, end_ns=None,
        priority=PRIORITIES[i % 4], message="bench")) for i in range(n)]


def timed(label: str, n: int, fn: Callable[[], T]) -> T:
    t = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t
    print(f"{label:<48} {dt * 1e3:9.1f} ms" + (f"  ({n / dt:,.0f}/s)" if n else ""))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history", type=int, default=30_000,
                        help="alarms of history spread over 30 days (default 30,000)")
    args = parser.parse_args()
    settings = AlarmsSection()
    with tempfile.TemporaryDirectory() as tmp:
        store = AlarmStore(Path(tmp) / "alarms.sqlite")
        month = events(args.history, T0 - 30 * 86400 * NS, 30 * 86400 * NS // args.history, "h")
        per_day = -(-args.history // 30)
        timed(f"apply {args.history:,} of history, a transaction a day", args.history,
              lambda: [store.apply(month[i:i + per_day], now_ns=month[i].alarm.start_ns)
                       for i in range(0, len(month), per_day)])
        flood = events(1000, T0, 10_000_000, "f")
        timed("apply 1,000 flood alarms, one transaction each", 1000,
              lambda: [store.apply([e], now_ns=e.alarm.start_ns) for e in flood])
        again = events(1000, T0 + 20 * NS, 10_000_000, "g")
        timed("apply 1,000 flood alarms, one transaction", 1000,
              lambda: store.apply(again, now_ns=T0 + 30 * NS))
        now = T0 + 31 * NS
        timed("list: 1,000 open, by priority and time", 0,
              lambda: store.alarms(Filter(states=("open",)), 1000, now))
        k = timed("KPIs over the last 24 h", 0,
                  lambda: kpis(store, settings, now - 86400 * NS, now))
        timed("KPIs over 30 days", 0, lambda: kpis(store, settings, now - 30 * 86400 * NS, now))
        print(f"  flood active={k['flood']['active']} current={k['rate']['current']} "
              f"raised={k['raised']}")
        last = store.last_event_id()
        timed(f"stream: read {last:,} journal entries, 500 a time", last,
              lambda: _read_all(store))
        store.close()


def _read_all(store: AlarmStore) -> int:
    seq = n = 0
    while batch := store.events_after(seq, 500):
        seq, n = batch[-1].seq, n + len(batch)
    return n


if __name__ == "__main__":
    main()
