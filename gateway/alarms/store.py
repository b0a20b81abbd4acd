"""The alarm store: every alarm's lifecycle state and a journal of its transitions, in one
SQLite file (WAL) that the gateway and the API share.

Lifecycle (ISA-18.2, OPC UA Part 9), from the alarm's two flags `active` and `acknowledged`:

    raise ─► active-unacknowledged ──ack──► active-acknowledged
                    │ clear                        │ clear
                    ▼                              ▼
             cleared-unacknowledged ──ack──►    closed

Shelving (timed, with a reason) and suppression (out of service, per tag or zone) hide an
alarm from the control room and from webhooks without changing its state. A shelf covers the
alarm's condition (kind and subject), so a repeat raised while it lasts is shelved too.

Every change is journaled (event id, time, alarm id, transition, who, comment, the alarm's
new state) in the same transaction as the state itself, so the journal is the alarm history,
the event stream's source and the webhooks' outbox. Engine events are idempotent by alarm id:
re-applying them after a crash changes nothing.

Two processes write: the gateway (engine events, shelf expiry) and the API (operator actions).
They write the same file directly, each change one short `BEGIN IMMEDIATE` transaction, with a
busy timeout: SQLite serialises the writers, and an operator gets the new state or a 409 at
once. A command table that the gateway applies would add a round trip and a second queue
for the same result, and acks would stall whenever the gateway is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np

import timegrammar
from anomaly.core.alarms import PRIORITIES, AlarmEvent
from gateway.alarms.encoding import ALARM_KEYS, AlarmJson, AlarmView, State, encode
from timegrammar.iso import iso

log = logging.getLogger(__name__)

SuppressionScope = Literal["tag", "zone"]
SYSTEM = "system"  # who, for transitions nobody asked for (engine events, shelf expiry)
SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS alarms (
    id TEXT PRIMARY KEY,
    condition TEXT NOT NULL,           -- kind:subject; a shelf covers every alarm of it
    kind TEXT NOT NULL, tag TEXT, zone TEXT, device TEXT,
    priority TEXT NOT NULL,
    rank INTEGER NOT NULL,             -- 3 critical ... 0 low
    start_ns INTEGER NOT NULL, end_ns INTEGER,
    raised_ns INTEGER NOT NULL,        -- when the store recorded the raise
    annunciated INTEGER NOT NULL,      -- raised neither shelved nor suppressed
    acked_ns INTEGER, acked_by TEXT, ack_comment TEXT,
    shelved_until_ns INTEGER, shelve_reason TEXT, shelved_by TEXT,
    suppressed INTEGER NOT NULL DEFAULT 0,
    data TEXT NOT NULL,                -- the engine's alarm (encoding.encode), last reported
    event_id INTEGER NOT NULL          -- its last journal entry
);
CREATE INDEX IF NOT EXISTS alarms_order ON alarms (rank DESC, start_ns DESC);
CREATE INDEX IF NOT EXISTS alarms_condition ON alarms (condition, shelved_until_ns);
-- Covers what the KPIs read of each raise, so that a month of them is one index scan.
CREATE INDEX IF NOT EXISTS alarms_raised ON alarms (raised_ns, annunciated, condition, priority);
CREATE TABLE IF NOT EXISTS journal (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: event ids only grow
    ts_ns INTEGER NOT NULL,
    alarm_id TEXT,                          -- NULL for a suppression rule's own entries
    transition TEXT NOT NULL,
    who TEXT NOT NULL,
    comment TEXT,
    data TEXT NOT NULL                      -- the alarm's state after the transition
);
CREATE INDEX IF NOT EXISTS journal_alarm ON journal (alarm_id, seq);
CREATE INDEX IF NOT EXISTS journal_time ON journal (transition, ts_ns);
CREATE TABLE IF NOT EXISTS suppressions (
    scope TEXT NOT NULL, name TEXT NOT NULL, reason TEXT NOT NULL, who TEXT NOT NULL,
    since_ns INTEGER NOT NULL,
    PRIMARY KEY (scope, name)
);
CREATE TABLE IF NOT EXISTS webhook_cursors (name TEXT PRIMARY KEY, seq INTEGER NOT NULL);
"""


class AlarmConflict(Exception):
    """An operator action that the alarm's state does not allow (HTTP 409)."""


class UnknownAlarm(KeyError):
    """No alarm (or suppression) by that name (HTTP 404)."""

    def __str__(self) -> str:
        return str(self.args[0])


def rank(priority: str) -> int:
    return PRIORITIES.index(priority) if priority in PRIORITIES else 0


def state_of(active: bool, acknowledged: bool) -> State:
    if active:
        return "active-acknowledged" if acknowledged else "active-unacknowledged"
    return "closed" if acknowledged else "cleared-unacknowledged"


def condition_of(alarm: Mapping[str, Any]) -> str:
    return f"{alarm['kind']}:{alarm.get('tag') or alarm.get('device') or alarm.get('zone') or ''}"


STATE_GROUPS: dict[str, tuple[str, ...]] = {
    "active": ("active-unacknowledged", "active-acknowledged"),
    "unacknowledged": ("active-unacknowledged", "cleared-unacknowledged"),
    "open": ("active-unacknowledged", "active-acknowledged", "cleared-unacknowledged"),
}
STATE_SQL = {"active-unacknowledged": "(end_ns IS NULL AND acked_ns IS NULL)",
             "active-acknowledged": "(end_ns IS NULL AND acked_ns IS NOT NULL)",
             "cleared-unacknowledged": "(end_ns IS NOT NULL AND acked_ns IS NULL)",
             "closed": "(end_ns IS NOT NULL AND acked_ns IS NOT NULL)"}


@dataclass(frozen=True)
class Filter:
    """Which alarms: every field given must match (None: any). `states` also takes `active`,
    `unacknowledged` and `open` (anything but closed)."""

    states: Sequence[str] = ()
    priorities: Sequence[str] = ()
    zone: str | None = None
    tag: str | None = None
    kind: str | None = None
    device: str | None = None
    start_ns: int | None = None  # alarm start, inclusive
    end_ns: int | None = None  # alarm start, exclusive
    shelved: bool | None = False  # False: not shelved now; True: only shelved; None: either
    suppressed: bool | None = False

    def sql(self, now_ns: int) -> tuple[str, list[Any]]:
        where: list[str] = []
        args: list[Any] = []
        states = {one for s in self.states for one in STATE_GROUPS.get(s, (s,))}
        if states:
            where.append("(" + " OR ".join(STATE_SQL[s] for s in sorted(states)) + ")")
        if self.priorities:
            where.append(f"priority IN ({','.join('?' * len(self.priorities))})")
            args += list(self.priorities)
        for column in ("zone", "tag", "kind", "device"):
            if (value := getattr(self, column)) is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if self.start_ns is not None:
            where.append("start_ns >= ?")
            args.append(self.start_ns)
        if self.end_ns is not None:
            where.append("start_ns < ?")
            args.append(self.end_ns)
        if self.shelved is not None:
            where.append(("" if self.shelved else "NOT ") + "coalesce(shelved_until_ns > ?, 0)")
            args.append(now_ns)
        if self.suppressed is not None:
            where.append("suppressed = ?")
            args.append(int(self.suppressed))
        return (" WHERE " + " AND ".join(where)) if where else "", args


@dataclass(frozen=True)
class JournalEntry:
    seq: int
    ts_ns: int
    alarm_id: str | None
    transition: str
    who: str
    comment: str | None
    data: dict

    def to_json(self) -> dict:
        return {"event_id": self.seq, "time": iso(self.ts_ns, "ms"), "alarm_id": self.alarm_id,
                "transition": self.transition, "who": self.who, "comment": self.comment}


def view(row: sqlite3.Row, now_ns: int) -> AlarmView:
    """An alarm as the API and the event stream show it: the engine's fields and its state."""
    shelved = row["shelved_until_ns"] is not None and row["shelved_until_ns"] > now_ns
    acked = row["acked_ns"] is not None
    data = json.loads(row["data"])
    # in the schema's order, however stored; encode() wrote it
    stored = cast(AlarmJson, {key: data[key] for key in ALARM_KEYS})
    return {**stored,
            "state": state_of(row["end_ns"] is None, acked),
            "active": row["end_ns"] is None, "acknowledged": acked,
            "acked_by": row["acked_by"],
            "acked_at": None if row["acked_ns"] is None else iso(row["acked_ns"], "ms"),
            "ack_comment": row["ack_comment"],
            "shelved": shelved,
            "shelved_until": iso(row["shelved_until_ns"], "ms") if shelved else None,
            "shelve_reason": row["shelve_reason"] if shelved else None,
            "shelved_by": row["shelved_by"] if shelved else None,
            "suppressed": bool(row["suppressed"]),
            "annunciated": bool(row["annunciated"]),
            "raised_at": iso(row["raised_ns"], "ms"),
            "event_id": row["event_id"]}


class AlarmStore:
    """One site's alarms. Thread-safe (one connection behind a lock); several processes may
    open the same file. Methods that change state take `now_ns` for tests (default: now)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA busy_timeout=10000")
        self._db.execute("PRAGMA journal_mode=WAL")
        # An alarm acknowledged to the operator survives a power cut, not only a kill -9:
        # alarms are few, a full sync per transaction costs nothing that matters.
        self._db.execute("PRAGMA synchronous=FULL")
        # Page cache, KiB: pinned, not left to the library's build; alarms are few and their
        # hot pages (open alarms, the journal's tail) fit many times over.
        self._db.execute("PRAGMA cache_size=-1024")
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            raise sqlite3.DatabaseError(f"{self.path}: alarm store schema {version}, this "
                                        f"version reads {SCHEMA_VERSION}")
        # Idempotent statements: the gateway and the API may both create the file at once.
        self._db.executescript(SCHEMA + f"PRAGMA user_version={SCHEMA_VERSION};")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken at once (IMMEDIATE) so that it never fails half-way
        on a lock held by the other process."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # --- journal ------------------------------------------------------------------------

    def _journal(self, now_ns: int, alarm_id: str | None, transition: str, who: str,
                 comment: str | None, data: Mapping[str, object] | None = None) -> int:
        """Append an entry; for an alarm, its state after the change (read back here)."""
        cur = self._db.execute(
            "INSERT INTO journal (ts_ns, alarm_id, transition, who, comment, data) "
            "VALUES (?, ?, ?, ?, ?, '')", (now_ns, alarm_id, transition, who, comment))
        seq = int(cur.lastrowid or 0)
        if alarm_id is not None:
            self._db.execute("UPDATE alarms SET event_id = ? WHERE id = ?", (seq, alarm_id))
            data = view(self._row(alarm_id), now_ns)
        self._db.execute("UPDATE journal SET data = ? WHERE seq = ?", (json.dumps(data), seq))
        return seq

    def _row(self, alarm_id: str) -> sqlite3.Row:
        row = self._db.execute("SELECT * FROM alarms WHERE id = ?", (alarm_id,)).fetchone()
        if row is None:
            raise UnknownAlarm(f"alarm {alarm_id!r} does not exist")
        return row

    def last_event_id(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT coalesce(max(seq), 0) FROM journal")
                       .fetchone()[0])

    def events_after(self, seq: int, limit: int = 500) -> list[JournalEntry]:
        """Journal entries after event id `seq`, oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM journal WHERE seq > ? ORDER BY seq LIMIT ?",
                                    (seq, limit)).fetchall()
        return [_entry(r) for r in rows]

    def history(self, alarm_id: str) -> list[JournalEntry]:
        """One alarm's journal, oldest first; UnknownAlarm when there is no such alarm."""
        with self._lock:
            self._row(alarm_id)
            rows = self._db.execute("SELECT * FROM journal WHERE alarm_id = ? ORDER BY seq",
                                    (alarm_id,)).fetchall()
        return [_entry(r) for r in rows]

    # --- engine events ------------------------------------------------------------------

    def apply(self, events: Iterable[AlarmEvent], now_ns: int | None = None) -> int:
        """Record raise and clear events in one transaction; returns how many changed
        something. An event already recorded (same alarm id) is skipped."""
        events = list(events)
        if not events:  # most engine ticks: no transaction at all
            return 0
        now = timegrammar.now_ns() if now_ns is None else now_ns
        changed = 0
        with self._write():
            rules = self._rules()
            for event in events:
                alarm = encode(event.alarm)
                known = self._db.execute("SELECT end_ns FROM alarms WHERE id = ?",
                                         (alarm["id"],)).fetchone()
                if known is None:  # a clear whose raise was lost is recorded as both
                    self._insert(event, alarm, rules, now)
                elif event.action == "raise" or known["end_ns"] is not None:
                    continue
                changed += 1
                if event.action == "clear":
                    self._db.execute("UPDATE alarms SET end_ns = ?, data = ? WHERE id = ?",
                                     (event.alarm.end_ns or now, json.dumps(alarm),
                                      alarm["id"]))
                    self._journal(now, alarm["id"], "clear", SYSTEM, None)
        return changed

    def _insert(self, event: AlarmEvent, alarm: AlarmJson, rules: set[tuple[str, str]],
                now: int) -> None:
        condition = condition_of(alarm)
        shelf = self._db.execute(
            "SELECT shelved_until_ns, shelve_reason, shelved_by FROM alarms WHERE condition = ? "
            "AND shelved_until_ns > ? ORDER BY shelved_until_ns DESC LIMIT 1",
            (condition, now)).fetchone()
        suppressed = _suppressed_by(alarm, rules)
        a = event.alarm
        self._db.execute(
            "INSERT INTO alarms (id, condition, kind, tag, zone, device, priority, rank, "
            "start_ns, end_ns, raised_ns, annunciated, shelved_until_ns, shelve_reason, "
            "shelved_by, suppressed, data, event_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?, ?, ?, ?, ?, ?, 0)",
            (a.id, condition, a.kind, a.tag, a.zone, a.device, a.priority, rank(a.priority),
             a.start_ns, now, int(shelf is None and not suppressed),
             *(shelf if shelf is not None else (None, None, None)), int(suppressed),
             json.dumps({**alarm, "end": None})))
        self._journal(now, a.id, "raise", SYSTEM, None)

    # --- operator actions ---------------------------------------------------------------

    def ack(self, alarm_id: str, who: str, comment: str | None = None,
            now_ns: int | None = None) -> AlarmView:
        """Acknowledge one alarm: its new state; AlarmConflict if it is acknowledged."""
        now = timegrammar.now_ns() if now_ns is None else now_ns
        with self._write():
            self._ack(self._row(alarm_id), who, comment, now)
            return view(self._row(alarm_id), now)

    def ack_many(self, ids: Sequence[str], who: str, comment: str | None = None,
                 now_ns: int | None = None) -> tuple[list[AlarmView], list[tuple[str, str]]]:
        """Acknowledge every alarm of `ids` that can be, in one transaction: (their new
        states, [(id, why not)] for the others)."""
        now = timegrammar.now_ns() if now_ns is None else now_ns
        done, skipped = [], []
        with self._write():
            for alarm_id in dict.fromkeys(ids):
                try:
                    self._ack(self._row(alarm_id), who, comment, now)
                except (AlarmConflict, UnknownAlarm) as e:
                    skipped.append((alarm_id, str(e)))
                else:
                    done.append(view(self._row(alarm_id), now))
        return done, skipped

    def _ack(self, row: sqlite3.Row, who: str, comment: str | None, now: int) -> None:
        if row["acked_ns"] is not None:
            raise AlarmConflict(f"alarm {row['id']!r} is {view(row, now)['state']}: it was "
                                f"acknowledged by {row['acked_by']} at "
                                f"{iso(row['acked_ns'], 'ms')}")
        self._db.execute("UPDATE alarms SET acked_ns = ?, acked_by = ?, ack_comment = ? "
                         "WHERE id = ?", (now, who, comment, row["id"]))
        self._journal(now, row["id"], "ack", who, comment)

    def shelve(self, alarm_id: str, who: str, reason: str, duration_ns: int,
               now_ns: int | None = None) -> AlarmView:
        """Shelve an alarm (and repeats of its condition) for `duration_ns`."""
        now = timegrammar.now_ns() if now_ns is None else now_ns
        with self._write():
            row = self._row(alarm_id)
            state = view(row, now)
            if state["state"] == "closed":
                raise AlarmConflict(f"alarm {alarm_id!r} is closed (cleared and acknowledged): "
                                    "there is nothing to shelve")
            if state["shelved"]:
                raise AlarmConflict(f"alarm {alarm_id!r} is already shelved until "
                                    f"{state['shelved_until']} by {state['shelved_by']}: "
                                    "unshelve it first")
            self._db.execute("UPDATE alarms SET shelved_until_ns = ?, shelve_reason = ?, "
                             "shelved_by = ? WHERE id = ?", (now + duration_ns, reason, who,
                                                             alarm_id))
            self._journal(now, alarm_id, "shelve", who, reason)
            return view(self._row(alarm_id), now)

    def unshelve(self, alarm_id: str, who: str, comment: str | None = None,
                 now_ns: int | None = None) -> AlarmView:
        now = timegrammar.now_ns() if now_ns is None else now_ns
        with self._write():
            if not view(self._row(alarm_id), now)["shelved"]:
                raise AlarmConflict(f"alarm {alarm_id!r} is not shelved")
            self._unshelve(alarm_id, who, comment, now)
            return view(self._row(alarm_id), now)

    def _unshelve(self, alarm_id: str, who: str, comment: str | None, now: int) -> None:
        self._db.execute("UPDATE alarms SET shelved_until_ns = NULL, shelve_reason = NULL, "
                         "shelved_by = NULL WHERE id = ?", (alarm_id,))
        self._journal(now, alarm_id, "unshelve", who, comment)

    def unshelve_expired(self, now_ns: int | None = None) -> int:
        """Unshelve every alarm whose shelf has run out (journaled as the system's); returns
        how many. The views treat an expired shelf as gone already: this records it."""
        now = timegrammar.now_ns() if now_ns is None else now_ns
        with self._lock:
            if self._db.execute("SELECT 1 FROM alarms WHERE shelved_until_ns <= ? LIMIT 1",
                                (now,)).fetchone() is None:
                return 0  # the usual case: no write transaction every second
        with self._write():
            ids = [r[0] for r in self._db.execute(
                "SELECT id FROM alarms WHERE shelved_until_ns <= ? ORDER BY id", (now,))]
            for alarm_id in ids:
                self._unshelve(alarm_id, SYSTEM, "shelf expired", now)
        return len(ids)

    def release(self, alarm_id: str, who: str, comment: str | None = None,
                now_ns: int | None = None) -> AlarmView:
        """Ask the engine to release the alarm a `chattering` alarm holds back (journaled as
        `release`; the gateway's engine reads it, `releases_after`, and clears the chattering
        alarm within a second or so). AlarmConflict unless it is an active, unreleased
        `chattering` alarm."""
        now = timegrammar.now_ns() if now_ns is None else now_ns
        with self._write():
            row = self._row(alarm_id)
            if row["kind"] != "chattering":
                raise AlarmConflict(f"alarm {alarm_id!r} is a {row['kind']} alarm: only a "
                                    "chattering alarm holds another back")
            if row["end_ns"] is not None:
                raise AlarmConflict(f"alarm {alarm_id!r} cleared at "
                                    f"{iso(row['end_ns'], 'ms')}: what it held back is "
                                    "released already")
            done = self._db.execute("SELECT who, ts_ns FROM journal WHERE alarm_id = ? AND "
                                    "transition = 'release'", (alarm_id,)).fetchone()
            if done is not None:
                raise AlarmConflict(f"alarm {alarm_id!r} was released by {done['who']} at "
                                    f"{iso(done['ts_ns'], 'ms')}: the gateway clears it shortly")
            self._journal(now, alarm_id, "release", who, comment)
            return view(self._row(alarm_id), now)

    def releases_after(self, seq: int) -> list[tuple[int, str]]:
        """(event id, alarm id) of the operators' releases after event id `seq`, in order."""
        return self._tuples("SELECT seq, alarm_id FROM journal WHERE transition = 'release' "
                            "AND seq > ? ORDER BY seq", (seq,))

    def comment(self, alarm_id: str, who: str, text: str, now_ns: int | None = None) -> AlarmView:
        now = timegrammar.now_ns() if now_ns is None else now_ns
        with self._write():
            self._row(alarm_id)
            self._journal(now, alarm_id, "comment", who, text)
            return view(self._row(alarm_id), now)

    # --- suppression (out of service) ---------------------------------------------------

    def _rules(self) -> set[tuple[str, str]]:
        return {(r[0], r[1]) for r in self._db.execute("SELECT scope, name FROM suppressions")}

    def suppressions(self) -> list[dict]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM suppressions ORDER BY scope, name").fetchall()
        return [_rule(r) for r in rows]

    def suppress(self, scope: SuppressionScope, name: str, who: str, reason: str,
                 now_ns: int | None = None) -> dict:
        """Take a tag or zone out of service: its open alarms and any raised from now on are
        recorded but suppressed. One already out of service stays as it is (idempotent)."""
        now = timegrammar.now_ns() if now_ns is None else now_ns
        with self._write():
            if (scope, name) in self._rules():
                return _rule(self._db.execute("SELECT * FROM suppressions WHERE scope = ? AND "
                                              "name = ?", (scope, name)).fetchone())
            self._db.execute("INSERT INTO suppressions VALUES (?, ?, ?, ?, ?)",
                             (scope, name, reason, who, now))
            rule = _rule(self._db.execute("SELECT * FROM suppressions WHERE scope = ? AND "
                                          "name = ?", (scope, name)).fetchone())
            self._journal(now, None, "suppression", who, reason, {**rule, "active": True})
            self._resuppress({(scope, name)} | self._rules(), who, reason, now)
            return rule

    def unsuppress(self, scope: SuppressionScope, name: str, who: str, comment: str | None = None,
                   now_ns: int | None = None) -> dict:
        now = timegrammar.now_ns() if now_ns is None else now_ns
        with self._write():
            row = self._db.execute("SELECT * FROM suppressions WHERE scope = ? AND name = ?",
                                   (scope, name)).fetchone()
            if row is None:
                raise UnknownAlarm(f"{scope} {name!r} is not suppressed")
            rule = _rule(row)
            self._db.execute("DELETE FROM suppressions WHERE scope = ? AND name = ?",
                             (scope, name))
            self._journal(now, None, "suppression", who, comment, {**rule, "active": False})
            self._resuppress(self._rules(), who, comment, now)
            return rule

    def _resuppress(self, rules: set[tuple[str, str]], who: str, comment: str | None,
                    now: int) -> None:
        """Bring the open alarms' suppressed flags in line with the rules, journaling each."""
        rows = self._db.execute("SELECT id, data, suppressed FROM alarms WHERE NOT "
                                "(end_ns IS NOT NULL AND acked_ns IS NOT NULL)").fetchall()
        for r in rows:
            want = _suppressed_by(json.loads(r["data"]), rules)
            if want != bool(r["suppressed"]):
                self._db.execute("UPDATE alarms SET suppressed = ? WHERE id = ?",
                                 (int(want), r["id"]))
                self._journal(now, r["id"], "suppress" if want else "unsuppress", who, comment)

    # --- reads --------------------------------------------------------------------------

    def get(self, alarm_id: str, now_ns: int | None = None) -> AlarmView:
        with self._lock:
            return view(self._row(alarm_id), timegrammar.now_ns() if now_ns is None else now_ns)

    def alarms(self, where: Filter = Filter(), limit: int = 1000,
               now_ns: int | None = None) -> tuple[list[AlarmView], int]:
        """Matching alarms by priority (highest first), then start (newest first), at most
        `limit`; and how many match in all."""
        now = timegrammar.now_ns() if now_ns is None else now_ns
        clause, args = where.sql(now)
        with self._lock:
            total = self._db.execute(f"SELECT count(*) FROM alarms{clause}", args).fetchone()[0]
            rows = self._db.execute(f"SELECT * FROM alarms{clause} ORDER BY rank DESC, "
                                    "start_ns DESC, id LIMIT ?", [*args, limit]).fetchall()
        return [view(r, now) for r in rows], int(total)

    # --- what the KPIs count (gateway.alarms.kpis): raises recorded in [start_ns, end_ns) --

    def raise_times(self, start_ns: int, end_ns: int) -> np.ndarray:
        """When the annunciated raises were recorded, in order."""
        rows = self._tuples("SELECT raised_ns FROM alarms WHERE raised_ns >= ? AND "
                            "raised_ns < ? AND annunciated ORDER BY raised_ns",
                            (start_ns, end_ns))
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def _tuples(self, sql: str, args: Sequence[object]) -> list[tuple]:
        """Rows as plain tuples: for many rows, a third of the time of `sqlite3.Row`."""
        with self._lock:
            cursor = self._db.cursor()
            cursor.row_factory = None
            return cursor.execute(sql, args).fetchall()

    def raise_counts(self, start_ns: int, end_ns: int, by: Literal["priority", "condition"],
                     limit: int = -1) -> list[sqlite3.Row]:
        """Annunciated raises per priority, or per condition (with its kind, tag, zone and
        device); most first."""
        columns = "priority" if by == "priority" else "condition, kind, tag, zone, device"
        with self._lock:
            return self._db.execute(
                f"SELECT {columns}, count(*) AS count FROM alarms WHERE raised_ns >= ? AND "
                f"raised_ns < ? AND annunciated GROUP BY {by} ORDER BY count DESC, {by} "
                "LIMIT ?", (start_ns, end_ns, limit)).fetchall()

    def subject(self, condition: str) -> dict:
        """kind, tag, zone and device of a condition."""
        with self._lock:
            row = self._db.execute("SELECT kind, tag, zone, device FROM alarms WHERE "
                                   "condition = ? LIMIT 1", (condition,)).fetchone()
        return dict(row)

    def unannunciated(self, start_ns: int, end_ns: int) -> int:
        """Raises recorded while shelved or suppressed."""
        with self._lock:
            return int(self._db.execute(
                "SELECT count(*) FROM alarms WHERE raised_ns >= ? AND raised_ns < ? AND "
                "NOT annunciated", (start_ns, end_ns)).fetchone()[0])

    def repeats(self, start_ns: int, end_ns: int, at_least: int) -> list[tuple]:
        """(condition, raised_ns) of the conditions raised (annunciated) `at_least` times,
        by condition and time."""
        return self._tuples(
            "SELECT condition, raised_ns FROM alarms WHERE raised_ns >= ? AND raised_ns < ? "
            "AND annunciated AND condition IN (SELECT condition FROM alarms WHERE "
            "raised_ns >= ? AND raised_ns < ? AND annunciated GROUP BY condition "
            "HAVING count(*) >= ?) ORDER BY condition, raised_ns",
            (start_ns, end_ns, start_ns, end_ns, at_least))

    def held_back(self, start_ns: int, end_ns: int) -> tuple[int, list[sqlite3.Row]]:
        """`chattering` alarms (the gate's: an alarm held back): how many were recorded in
        [start_ns, end_ns), and those still active, oldest first."""
        with self._lock:
            raised = self._db.execute(
                "SELECT count(*) FROM alarms WHERE kind = 'chattering' AND raised_ns >= ? AND "
                "raised_ns < ?", (start_ns, end_ns)).fetchone()[0]
            active = self._db.execute(
                "SELECT id, tag, zone, device, start_ns FROM alarms WHERE kind = 'chattering' "
                "AND end_ns IS NULL ORDER BY start_ns, id").fetchall()
        return int(raised), active

    def standing(self, now_ns: int) -> sqlite3.Row:
        """Counts of the alarms not closed: active (neither shelved nor suppressed),
        unacknowledged, shelved, suppressed."""
        with self._lock:
            return self._db.execute(
                "SELECT coalesce(sum(end_ns IS NULL AND NOT suppressed AND "
                "NOT coalesce(shelved_until_ns > ?1, 0)), 0) AS active, "
                "coalesce(sum(acked_ns IS NULL), 0) AS unacknowledged, "
                "coalesce(sum(coalesce(shelved_until_ns > ?1, 0)), 0) AS shelved, "
                "coalesce(sum(suppressed), 0) AS suppressed FROM alarms "
                "WHERE NOT (end_ns IS NOT NULL AND acked_ns IS NOT NULL)", (now_ns,)).fetchone()

    def stale(self, raised_before_ns: int, limit: int) -> tuple[int, list[str]]:
        """Alarms still active that were raised before a time: how many, and the oldest
        `limit` ids."""
        with self._lock:
            n = self._db.execute("SELECT count(*) FROM alarms WHERE end_ns IS NULL AND "
                                 "raised_ns < ?", (raised_before_ns,)).fetchone()[0]
            ids = [r[0] for r in self._db.execute(
                "SELECT id FROM alarms WHERE end_ns IS NULL AND raised_ns < ? "
                "ORDER BY raised_ns, id LIMIT ?", (raised_before_ns, limit))]
        return int(n), ids

    # --- webhook outbox -----------------------------------------------------------------

    def cursor(self, name: str) -> int | None:
        with self._lock:
            row = self._db.execute("SELECT seq FROM webhook_cursors WHERE name = ?",
                                   (name,)).fetchone()
        return None if row is None else int(row[0])

    def set_cursor(self, name: str, seq: int) -> None:
        with self._write():
            self._db.execute("INSERT INTO webhook_cursors VALUES (?, ?) ON CONFLICT(name) "
                             "DO UPDATE SET seq = excluded.seq", (name, seq))

    def move_cursor(self, old: str, new: str) -> bool:
        """Move the cursor kept under `old` to `new` (unless `new` has one already), deleting
        `old`'s row; False if there was none. No copy of `old` stays in the file (an earlier
        version kept a webhook's cursor under its URL, credentials and all): deleted content
        is zeroed and the WAL checkpointed (in full unless another process reads just then)."""
        with self._lock:
            if self.cursor(old) is None:
                return False
            before = self._db.execute("PRAGMA secure_delete").fetchone()[0]
            self._db.execute("PRAGMA secure_delete = ON")
            try:
                with self._write():
                    self._db.execute("INSERT OR IGNORE INTO webhook_cursors SELECT ?, seq FROM "
                                     "webhook_cursors WHERE name = ?", (new, old))
                    self._db.execute("DELETE FROM webhook_cursors WHERE name = ?", (old,))
            finally:
                self._db.execute(f"PRAGMA secure_delete = {int(before)}")
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return True


def _entry(r: sqlite3.Row) -> JournalEntry:
    return JournalEntry(r["seq"], r["ts_ns"], r["alarm_id"], r["transition"], r["who"],
                        r["comment"], json.loads(r["data"]))


def _rule(r: sqlite3.Row) -> dict:
    return {"scope": r["scope"], "name": r["name"], "reason": r["reason"], "by": r["who"],
            "since": iso(r["since_ns"], "ms")}


def _suppressed_by(alarm: Mapping[str, Any], rules: set[tuple[str, str]]) -> bool:
    tags = {alarm.get("tag"), *alarm.get("tags", ())} - {None}
    return (any(("tag", t) in rules for t in tags)
            or (alarm.get("zone") is not None and ("zone", alarm["zone"]) in rules))


async def run_unshelve_timer(store: AlarmStore, stop: asyncio.Event,
                             interval: float = 1.0) -> None:
    """Record expired shelves every `interval` seconds until `stop` is set."""
    while not stop.is_set():
        try:
            if n := await asyncio.to_thread(store.unshelve_expired):
                log.info("event=alarms_unshelved count=%d", n)
        except sqlite3.Error as e:
            log.error("event=alarm_store_error action=unshelve reason=%r", str(e))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(interval):
                await stop.wait()
