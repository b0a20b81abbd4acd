"""Live state of the gateway that health and metrics report: per device and per sink.

Drivers and sinks update these counters in place (plain attributes, no locks: one event
loop). `snapshot()` gives a JSON-able dict, which the gateway also writes to
`<data_dir>/status.json` so that a separate `scadawatch api` process can serve it.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from gateway.data_dir import write_atomically

DeviceState = Literal["ok", "degraded", "down", "unknown"]
TaskState = Literal["running", "restarting"]

# Upper bounds (seconds) of the request-latency histogram buckets.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass
class DeviceStatus:
    name: str
    protocol: str
    bus: str  # "tcp:127.0.0.1:5020" or "rtu:/dev/ttyUSB0"
    state: DeviceState = "unknown"
    last_success: float | None = None  # Unix seconds
    last_error: str | None = None
    polls_total: int = 0
    poll_errors_total: int = 0
    requests_total: int = 0
    request_errors_total: dict[str, int] = field(default_factory=dict)  # cause name -> count
    request_seconds_sum: float = 0.0
    request_seconds_buckets: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BUCKETS))
    readings_total: int = 0
    reconnects_total: int = 0
    # Seconds without a successful poll after which the device counts as down whatever its
    # driver last said (a poller that stopped says nothing): set by the driver.
    stale_after_seconds: float | None = None

    def observe_request(self, seconds: float) -> None:
        self.requests_total += 1
        self.request_seconds_sum += seconds
        for i, bound in enumerate(LATENCY_BUCKETS):
            if seconds <= bound:
                self.request_seconds_buckets[i] += 1

    def count_error(self, cause: str) -> None:
        self.request_errors_total[cause] = self.request_errors_total.get(cause, 0) + 1


@dataclass
class SinkStatus:
    name: str
    readings_total: int = 0  # readings this sink has stored
    errors_total: int = 0
    quarantined_total: int = 0  # readings the sink refused for good (logged, kept in a file)
    last_error: str | None = None
    cause: str | None = None  # why its last store failed (gateway.failures); None once it stores
    backlog_readings: int = 0  # spooled but not yet stored by this sink
    backlog_age_seconds: float = 0.0


@dataclass
class SpoolStatus:
    bytes: int = 0
    batches: int = 0
    readings_appended_total: int = 0
    readings_dropped_total: int = 0  # dropped by the size/age bounds: logged too, never silent
    oldest_age_seconds: float = 0.0
    # While the disk refuses writes: readings held in memory (not yet acknowledged), those
    # dropped when memory was full too (logged), and why.
    held_readings: int = 0
    readings_lost_total: int = 0
    cause: str | None = None
    last_error: str | None = None


@dataclass
class TaskStatus:
    """A long-lived part of the gateway (a poller, a sink, the clock...) under supervision."""

    name: str
    state: TaskState = "running"
    restarts_total: int = 0
    cause: str | None = None  # why it last failed
    last_error: str | None = None


@dataclass
class AnomalyStatus:
    """The anomaly engine's counts (what it drained is its sink's, under `sinks`)."""

    events_total: int = 0  # alarm events (raise, update, clear) the engine returned
    # Readings judged at their receipt time: their device's clock ran ahead of the gateway's.
    clock_ahead_readings_total: int = 0
    # Good readings that came after their tick had closed (beyond `lateness`): not judged.
    late_readings_total: int = 0


@dataclass
class GatewayStatus:
    site: str
    started: float = field(default_factory=time.time)
    devices: dict[str, DeviceStatus] = field(default_factory=dict)
    sinks: dict[str, SinkStatus] = field(default_factory=dict)
    spool: SpoolStatus = field(default_factory=SpoolStatus)
    tasks: dict[str, TaskStatus] = field(default_factory=dict)
    anomaly: AnomalyStatus = field(default_factory=AnomalyStatus)

    def snapshot(self) -> dict:
        return {"updated": time.time(), **asdict(self)}

    def write(self, path: Path) -> None:
        """Replace `path` atomically with the current snapshot."""
        write_atomically(path, json.dumps(self.snapshot()).encode(), durable=False)


def read_snapshot(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
