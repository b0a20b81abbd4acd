"""`/metrics`: the gateway's status in Prometheus text format.

Names follow DESIGN.md: prefix `scadawatch_`, base units, counters end in `_total`, labels for
device, sink, task (the gateway's few long-lived parts) and cause only (never per tag:
cardinality). A gateway that is not running
exports `scadawatch_gateway_up 0` and nothing stale.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from api.context import ApiContext, Ctx
from api.routes.health import device_rows, read_status
from api.security.auth import GuardedRoute
from gateway.status import LATENCY_BUCKETS, DeviceStatus, SinkStatus, TaskStatus

P = "scadawatch_"
STATES = ("ok", "degraded", "down", "unknown")

router = APIRouter(route_class=GuardedRoute)


class StatusCollector:
    """Reads the status snapshot at each scrape (a prometheus_client custom collector)."""

    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    def collect(self) -> Iterator[Metric]:
        view = read_status(self.ctx, time.time())
        yield GaugeMetricFamily(P + "gateway_up", "1 when the gateway publishes a fresh status",
                                value=1.0 if view.running else 0.0)
        if view.age is not None:
            yield GaugeMetricFamily(P + "gateway_status_age_seconds",
                                    "age of the gateway's last status", value=view.age)
        if not view.running or view.status is None:
            return
        st = view.status
        yield GaugeMetricFamily(P + "gateway_start_time_seconds",
                                "when the gateway started, Unix time", value=st.started)
        yield from self._devices(device_rows(self.ctx, view))
        yield from self._sinks(st.sinks.values())
        sp = st.spool
        yield GaugeMetricFamily(P + "spool_bytes", "spool size on disk", value=sp.bytes)
        yield GaugeMetricFamily(P + "spool_batches", "batches in the spool", value=sp.batches)
        yield GaugeMetricFamily(P + "spool_oldest_age_seconds",
                                "age of the oldest spooled batch", value=sp.oldest_age_seconds)
        yield CounterMetricFamily(P + "spool_readings_appended_total",
                                  "readings written to the spool", value=sp.readings_appended_total)
        yield CounterMetricFamily(P + "spool_readings_dropped_total",
                                  "readings dropped by the spool's size or age bound",
                                  value=sp.readings_dropped_total)
        yield GaugeMetricFamily(P + "spool_held_readings",
                                "readings held in memory while the disk refuses writes",
                                value=sp.held_readings)
        yield CounterMetricFamily(P + "spool_readings_lost_total",
                                  "held readings dropped: memory full too, or stopped first",
                                  value=sp.readings_lost_total)
        failing = GaugeMetricFamily(P + "spool_write_failing",
                                    "1 while the spool cannot write, by cause", labels=["cause"])
        if sp.cause is not None:
            failing.add_metric([sp.cause], 1.0)
        yield failing
        yield from self._tasks(st.tasks.values())
        yield CounterMetricFamily(P + "anomaly_events_total",
                                  "alarm events (raise, update, clear) from the anomaly engine",
                                  value=st.anomaly.events_total)
        yield CounterMetricFamily(P + "anomaly_clock_ahead_readings_total",
                                  "readings judged at receipt: their device's clock ran ahead",
                                  value=st.anomaly.clock_ahead_readings_total)
        yield CounterMetricFamily(P + "anomaly_late_readings_total",
                                  "good readings that came after their tick closed: not judged",
                                  value=st.anomaly.late_readings_total)

    def _devices(self, devices: list[DeviceStatus]) -> Iterator[Metric]:
        dev = ["device"]
        up = GaugeMetricFamily(P + "device_up", "1 when the device answers (ok or degraded)",
                               labels=dev)
        state = GaugeMetricFamily(P + "device_state", "1 for the device's current state",
                                  labels=["device", "state"])
        last = GaugeMetricFamily(P + "device_last_success_timestamp_seconds",
                                 "last successful poll, Unix time", labels=dev)
        counters = {
            attr: CounterMetricFamily(P + "device_" + attr, text, labels=dev)
            for attr, text in (("polls_total", "polls started"),
                               ("poll_errors_total", "polls with at least one failed request"),
                               ("readings_total", "readings produced"),
                               ("reconnects_total", "connections re-opened"))
        }
        errors = CounterMetricFamily(P + "device_request_errors_total",
                                     "failed requests by cause", labels=["device", "cause"])
        latency = HistogramMetricFamily(P + "device_request_duration_seconds",
                                        "request round-trip time", labels=dev)
        for d in devices:
            up.add_metric([d.name], 1.0 if d.state in ("ok", "degraded") else 0.0)
            for s in STATES:
                state.add_metric([d.name, s], 1.0 if d.state == s else 0.0)
            if d.last_success is not None:
                last.add_metric([d.name], d.last_success)
            for attr, family in counters.items():
                family.add_metric([d.name], getattr(d, attr))
            for cause, n in sorted(d.request_errors_total.items()):
                errors.add_metric([d.name, cause], n)
            # The status keeps cumulative bucket counts, as Prometheus wants them.
            buckets = [(repr(b), n) for b, n in zip(LATENCY_BUCKETS, d.request_seconds_buckets,
                                                     strict=False)]
            latency.add_metric([d.name], [*buckets, ("+Inf", d.requests_total)],
                               d.request_seconds_sum)
        yield from (up, state, last, *counters.values(), errors, latency)

    def _sinks(self, sinks: Iterable[SinkStatus]) -> Iterator[Metric]:
        sink = ["sink"]
        families: list[tuple[str, CounterMetricFamily | GaugeMetricFamily]] = [
            ("readings_total", CounterMetricFamily(P + "sink_readings_total",
                                                   "readings stored", labels=sink)),
            ("errors_total", CounterMetricFamily(P + "sink_errors_total",
                                                 "failed writes", labels=sink)),
            ("quarantined_total", CounterMetricFamily(P + "sink_quarantined_total",
                                                      "readings refused for good, kept aside",
                                                      labels=sink)),
            ("backlog_readings", GaugeMetricFamily(P + "sink_backlog_readings",
                                                   "spooled, not yet stored", labels=sink)),
            ("backlog_age_seconds", GaugeMetricFamily(P + "sink_backlog_age_seconds",
                                                      "age of the oldest reading not yet stored",
                                                      labels=sink)),
        ]
        failing = GaugeMetricFamily(P + "sink_failing", "1 while the sink cannot store, by "
                                    "cause", labels=["sink", "cause"])
        for s in sinks:
            for attr, family in families:
                family.add_metric([s.name], getattr(s, attr))
            if s.cause is not None:
                failing.add_metric([s.name, s.cause], 1.0)
        yield from (f for _, f in families)
        yield failing

    def _tasks(self, tasks: Iterable[TaskStatus]) -> Iterator[Metric]:
        restarts = CounterMetricFamily(P + "task_restarts_total",
                                       "restarts of a gateway task after it failed",
                                       labels=["task"])
        up = GaugeMetricFamily(P + "task_up", "1 while the task runs, 0 while it waits to "
                               "restart", labels=["task"])
        for t in tasks:
            restarts.add_metric([t.name], t.restarts_total)
            up.add_metric([t.name], 1.0 if t.state == "running" else 0.0)
        yield from (restarts, up)


def exposition(ctx: ApiContext) -> bytes:
    """One scrape: a registry per call is cheap and keeps no state between scrapes."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(StatusCollector(ctx))
    return generate_latest(reg)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}},
                     "description": "Prometheus text exposition format"}},
)
async def metrics(ctx: Ctx) -> Response:
    """Polls, errors and request latency per device, sink throughput and backlog, spool depth
    and age. Labels: `device`, `sink`, `cause`; never per tag."""
    return Response(exposition(ctx), media_type=CONTENT_TYPE_LATEST)
