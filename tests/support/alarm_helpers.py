"""Alarms and engine events for alarm-store tests, as the anomaly engine makes them."""

from __future__ import annotations

from anomaly.core.alarms import PRIORITY, Alarm, AlarmEvent

NS = 1_000_000_000
T0 = 1_767_600_000 * NS  # 2026-01-05T08:00:00Z


def alarm(kind: str = "leak", subject: str = "dma1", start_ns: int = T0,
          priority: str | None = None, scope: str = "zone") -> Alarm:
    """An alarm with the engine's id scheme: `kind:subject:start seconds`."""
    tag = subject if scope == "tag" else None
    zone = subject if scope == "zone" else (subject.split(".")[0] if tag else None)
    return Alarm(id=f"{kind}:{subject}:{start_ns // NS}", kind=kind, tag=tag, zone=zone,
                 start_ns=start_ns, end_ns=None, priority=priority or PRIORITY[kind],
                 message=f"{kind} on {subject}", tags=(tag,) if tag else ())


def raised(a: Alarm) -> AlarmEvent:
    return AlarmEvent("raise", a)


def cleared(a: Alarm, end_ns: int | None = None) -> AlarmEvent:
    done = Alarm(**{**a.__dict__, "end_ns": end_ns or a.start_ns + 60 * NS})
    return AlarmEvent("clear", done)
