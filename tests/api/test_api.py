"""The HTTP API on a real uvicorn server on loopback, over the real embedded historian and the
gateway's real status objects (in-process snapshot and status.json)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.harness import auth_headers, running

from anomaly.core.batch import Batch, Quality
from api.app import create_app
from api.models import Health, History, Latest, Points
from api.times import parse_time
from gateway.inputs import quality
from gateway.site.loader import load_site
from gateway.site.model import Site
from gateway.status import DeviceState, DeviceStatus, GatewayStatus, SinkStatus, read_snapshot
from gateway.storage.historian import EmbeddedHistorian
from timegrammar import NS, parse_duration
from timegrammar.iso import iso_column

T0 = parse_time("2024-01-05T00:00:00Z", 0)
HOUR = 3600 * NS
SITE_TOML = """
[site]
name = "apitest"

[[devices]]
name = "plc1"
protocol = "modbus-tcp"
port = 5020
poll_interval = 60.0   # stale after 10 x 60 s: no test run is that slow
stale_after = 10

[[devices]]
name = "plc2"
protocol = "modbus-tcp"
port = 5021
poll_interval = 2.0    # stale after 5 x 2 s; its last reading is 2 h old
stale_after = 5

[[points]]
tag = "dma1.inlet.flow"
device = "plc1"
kind = "flow"
unit = "m3/h"
zone = "dma1"
role = "inflow"
lo = 0.0
hi = 500.0
description = "DMA 1 inlet"
address = 0

[[points]]
tag = "dma1.outlet.flow"
device = "plc1"
kind = "flow"
unit = "m3/h"
zone = "dma1"
role = "outflow"
address = 2

[[points]]
tag = "dma1.pressure"
device = "plc1"
kind = "pressure"
unit = "bar"
zone = "dma1"
address = 4

[[points]]
tag = "feeder1.voltage"
device = "plc2"
kind = "voltage"
unit = "kV"
zone = "feeder1"
address = 0

[[points]]
tag = "replay.level"
kind = "level"
unit = "m"
"""
INLET, OUTLET, PRESSURE, VOLTAGE, LEVEL = range(5)
OPCUA_UNCERTAIN = 0x40920000


def readings(now: int) -> Batch:
    """An hour of 1 s readings of the inlet at T0 (some bad, some uncertain), two recent hours
    of it at 10 s, and one last reading of the other points (none for the pressure)."""
    n = 3600
    quality_ = np.zeros(n, np.uint8)
    quality_[::89] = Quality.UNCERTAIN
    quality_[::97] = Quality.BAD
    value = 100 + 20 * np.sin(np.arange(n) / 300)
    value[quality_ == Quality.BAD] = np.nan
    cause = np.where(quality_ == Quality.BAD, quality.TIMEOUT, 0)
    hour = Batch.of(source_ts=T0 + np.arange(n) * NS, point=np.full(n, INLET), value=value,
                    quality=quality_, cause=cause)
    recent_ts = now - 2 * HOUR + np.arange(1, 721) * 10 * NS
    recent = Batch.of(source_ts=recent_ts, point=np.full(720, INLET), value=np.arange(720.0),
                      quality=0)
    others = Batch.of(
        source_ts=[now - NS, now - 2 * HOUR, T0],
        point=[OUTLET, VOLTAGE, LEVEL],
        value=[np.nan, 11.2, 3.5],
        quality=[Quality.BAD, Quality.UNCERTAIN, Quality.GOOD],
        cause=[quality.TIMEOUT, OPCUA_UNCERTAIN, 0],
    )
    return Batch.concat([hour, recent, others])


def gateway_status(plc1: DeviceState = "ok", plc2: DeviceState = "down",
                   sink_lag: float = 0.0) -> GatewayStatus:
    gs = GatewayStatus(site="apitest", started=time.time() - 120)
    for name, state in (("plc1", plc1), ("plc2", plc2)):
        d = DeviceStatus(name=name, protocol="modbus-tcp", bus=f"tcp:127.0.0.1:{name}",
                         state=state, polls_total=100, poll_errors_total=3,
                         readings_total=300, last_success=time.time() - 5)
        for seconds in (0.0004, 0.003, 0.003, 0.2, 3.0):
            d.observe_request(seconds)
        d.count_error("timeout")
        d.count_error("timeout")
        d.count_error("illegal_data_address")
        if state == "down":
            d.last_error = "timeout"
        gs.devices[name] = d
    gs.sinks["historian"] = SinkStatus(name="historian", readings_total=4500,
                                       backlog_readings=10, backlog_age_seconds=sink_lag)
    gs.spool.bytes, gs.spool.readings_appended_total = 65536, 4510
    gs.anomaly.events_total, gs.anomaly.clock_ahead_readings_total = 7, 2
    gs.anomaly.late_readings_total = 3
    return gs


class StatusBox:
    """The status source the app reads; tests swap what it returns."""

    def __init__(self) -> None:
        self.source: Callable[[], dict | None] = gateway_status().snapshot

    def __call__(self) -> dict | None:
        return self.source()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    path = tmp_path_factory.mktemp("api") / "site.toml"
    path.write_text(SITE_TOML)
    return load_site(path)


@pytest.fixture(scope="module")
def historian(site: Site) -> Iterator[EmbeddedHistorian]:
    """The historian as the gateway writes it, filled the way its spool sink fills it."""
    h = EmbeddedHistorian(site.site.data_dir / "historian.sqlite", [p.tag for p in site.points])
    h.store([(1, readings(time.time_ns()))])
    yield h
    h.close()


@pytest.fixture(scope="module")
def reader(site: Site, historian: EmbeddedHistorian) -> Iterator[EmbeddedHistorian]:
    """What the API reads through: a read-only reader, as a separate API process opens it."""
    r = EmbeddedHistorian(historian.path, historian.tags, readonly=True)
    yield r
    r.close()


@pytest.fixture(scope="module")
def status_box() -> StatusBox:
    return StatusBox()


@pytest.fixture(scope="module")
def server(site: Site, reader: EmbeddedHistorian, status_box: StatusBox) -> Iterator[str]:
    with running(create_app(site, reader, status_box)) as (url, _):
        yield url


@pytest.fixture(scope="module")
def client(server: str, site: Site) -> Iterator[httpx.Client]:
    """A client with a viewer token, which every GET route takes (tests/api/test_auth.py)."""
    with httpx.Client(base_url=server + "/api/v1", timeout=30,
                      headers=auth_headers(site.site.data_dir, "viewer")) as c:
        yield c


@pytest.fixture
def status(status_box: StatusBox) -> Iterator[StatusBox]:
    """The status box, reset to a running gateway (plc2 down) after the test."""
    yield status_box
    status_box.source = gateway_status().snapshot


def tags_of(rows: list[dict]) -> list[str]:
    return [r["tag"] for r in rows]


# --- points -------------------------------------------------------------------------------

@pytest.mark.parametrize(("params", "tags"), [
    ({}, ["dma1.inlet.flow", "dma1.outlet.flow", "dma1.pressure", "feeder1.voltage",
          "replay.level"]),
    ({"zone": "dma1"}, ["dma1.inlet.flow", "dma1.outlet.flow", "dma1.pressure"]),
    ({"kind": "flow"}, ["dma1.inlet.flow", "dma1.outlet.flow"]),
    ({"device": "plc2"}, ["feeder1.voltage"]),
    ({"zone": "dma1", "kind": "pressure"}, ["dma1.pressure"]),
    ({"zone": "feeder1", "kind": "flow"}, []),
])
def test_points_filters(client: httpx.Client, params: dict, tags: list[str]) -> None:
    r = client.get("/points", params=params)
    assert r.status_code == 200
    body = Points.model_validate(r.json()).model_dump()
    assert tags_of(body["points"]) == tags and body["count"] == len(tags)


def test_points_carry_what_the_site_file_says(client: httpx.Client) -> None:
    inlet = client.get("/points", params={"kind": "flow"}).json()["points"][0]
    assert inlet == {"tag": "dma1.inlet.flow", "device": "plc1", "kind": "flow", "unit": "m3/h",
                     "zone": "dma1", "role": "inflow", "lo": 0.0, "hi": 500.0,
                     "description": "DMA 1 inlet"}


# --- latest -------------------------------------------------------------------------------

@pytest.mark.parametrize(("tag", "value", "unit", "quality_", "cause", "stale"), [
    ("dma1.inlet.flow", 719.0, "m3/h", "good", None, False),
    ("dma1.outlet.flow", None, "m3/h", "bad", "timeout", False),
    ("dma1.pressure", None, "bar", None, None, True),  # never read
    ("feeder1.voltage", 11.2, "kV", "uncertain", "opcua_UncertainInitialValue", True),
    ("replay.level", 3.5, "m", "good", None, False),  # no device: not polled, never stale
])
def test_latest_reading_per_tag(client: httpx.Client, tag: str, value: float | None, unit: str,
                                quality_: str | None, cause: str | None, stale: bool) -> None:
    r = client.get("/latest", params={"tag": tag})
    assert r.status_code == 200
    [row] = Latest.model_validate(r.json()).model_dump()["readings"]
    assert (row["tag"], row["value"], row["unit"], row["quality"], row["cause"],
            row["stale"]) == (tag, value, unit, quality_, cause, stale)
    assert (row["source_ts"] is None) == (quality_ is None)
    assert row["source_ts"] is None or row["source_ts"].endswith("Z")


@pytest.mark.parametrize(("params", "tags"), [
    ({}, ["dma1.inlet.flow", "dma1.outlet.flow", "dma1.pressure", "feeder1.voltage",
          "replay.level"]),
    ({"zone": "dma1", "kind": "flow"}, ["dma1.inlet.flow", "dma1.outlet.flow"]),
    ({"device": "plc2"}, ["feeder1.voltage"]),
    ({"tag": ["replay.level", "dma1.pressure", "replay.level"]},
     ["replay.level", "dma1.pressure"]),
    ({"kind": "status"}, []),
])
def test_latest_filters(client: httpx.Client, params: dict, tags: list[str]) -> None:
    body = client.get("/latest", params=params).json()
    assert tags_of(body["readings"]) == tags and body["count"] == len(tags)


def test_latest_matches_the_historian(client: httpx.Client,
                                      historian: EmbeddedHistorian) -> None:
    body = client.get("/latest").json()
    expected = historian.latest()
    got = {r["tag"]: r for r in body["readings"]}
    tags = [historian.tags[p] for p in expected.point]
    assert [got[t]["source_ts"] for t in tags] == iso_column(expected.source_ts, "ms")
    assert [got[t]["gateway_ts"] for t in tags] == iso_column(expected.gateway_ts, "ms")


# --- history ------------------------------------------------------------------------------

def expected_raw(historian: EmbeddedHistorian, tag: str, start: int, end: int) -> dict:
    b = historian.history(tag, start, end)
    names = ["good", "uncertain", "bad"]
    return {"ts": iso_column(b.source_ts, "ms"),
            "value": [None if q == Quality.BAD else v
                      for v, q in zip(b.value.tolist(), b.quality.tolist(), strict=True)],
            "quality": [names[q] for q in b.quality.tolist()]}


# The same ten minutes written five ways.
@pytest.mark.parametrize(("start", "end"), [
    ("2024-01-05T00:00:00Z", "2024-01-05T00:10:00Z"),
    ("2024-01-05T02:00:00+02:00", "2024-01-04T23:10:00-01:00"),
    ("2024-01-05T00:00:00", "2024-01-05 00:10"),
    ("2024-01-05T02:00:00 02:00", "2024-01-05T00:10:00.000000000z"),  # `+` sent unencoded
    ("2024-01-05", "2024-01-05T00:10:00Z"),
])
def test_history_raw_iso_times(client: httpx.Client, historian: EmbeddedHistorian,
                               start: str, end: str) -> None:
    r = client.get("/history", params={"tag": "dma1.inlet.flow", "start": start, "end": end})
    assert r.status_code == 200
    body = History.model_validate(r.json()).model_dump()
    assert (body["start"], body["end"]) == ("2024-01-05T00:00:00Z", "2024-01-05T00:10:00Z")
    assert (body["tag"], body["unit"], body["bucket"], body["truncated"]) == (
        "dma1.inlet.flow", "m3/h", None, False)
    expected = expected_raw(historian, "dma1.inlet.flow", T0, T0 + 600 * NS)
    assert {k: body[k] for k in expected} == expected
    assert body["rows"] == 600
    assert {"good", "uncertain", "bad"} == set(body["quality"])


@pytest.mark.parametrize(("params", "span"), [
    ({}, HOUR),  # default: the last hour
    ({"start": "-1h"}, HOUR),
    ({"start": "now-15min"}, 15 * 60 * NS),
    ({"start": "-10m"}, 10 * 60 * NS),  # m is minutes, as InfluxDB and Grafana read it
    ({"start": "-1h30m", "end": "-30m"}, HOUR),
    ({"start": "-1w"}, 7 * 24 * HOUR),
    ({"start": "-2d", "end": "-1h"}, 47 * HOUR),
    ({"start": "-90min", "end": "now"}, 90 * 60 * NS),
    ({"start": "", "end": "", "bucket": "", "agg": ""}, HOUR),  # empty form fields: defaults
])
def test_history_relative_times(client: httpx.Client, historian: EmbeddedHistorian,
                                params: dict, span: int) -> None:
    body = client.get("/history", params={"tag": "dma1.inlet.flow", **params}).json()
    start, end = parse_time(body["start"], 0), parse_time(body["end"], 0)
    assert end - start == span
    assert abs(end - parse_time(params.get("end") or "now", time.time_ns())) < 60 * NS
    assert {k: body[k] for k in ("ts", "value", "quality")} == expected_raw(
        historian, "dma1.inlet.flow", start, end)
    assert body["rows"] > 0


@pytest.mark.parametrize(("bucket", "agg", "columns"), [
    ("1min", None, ["mean"]),
    ("10min", ["min", "max", "count"], ["min", "max", "count"]),
    ("7s", ["first,last", "mean"], ["first", "last", "mean"]),
    ("1h", ["count,mean,count"], ["count", "mean"]),
    ("1min", ["max,", ""], ["max"]),
    ("25min", ["mean", "min", "max", "first", "last", "count"],
     ["mean", "min", "max", "first", "last", "count"]),
])
def test_history_buckets_are_the_historians(client: httpx.Client, historian: EmbeddedHistorian,
                                            bucket: str, agg: list[str] | None,
                                            columns: list[str]) -> None:
    start, end = "2024-01-05T00:05:00Z", "2024-01-05T01:00:00Z"
    r = client.get("/history", params={"tag": "dma1.inlet.flow", "start": start, "end": end,
                                       "bucket": bucket, "agg": agg})
    assert r.status_code == 200
    body = r.json()
    History.model_validate(body)
    width = parse_duration(bucket)
    b = historian.buckets("dma1.inlet.flow", parse_time(start, 0), parse_time(end, 0), width)
    assert body["bucket"] == bucket and body["bucket_seconds"] * NS == width
    assert [k for k in body if k in ("value", "quality", "mean", "min", "max", "first", "last",
                                     "count")] == columns
    assert body["ts"] == iso_column(b.start, "ms") and body["rows"] == len(b)
    for column in columns:
        assert body[column] == getattr(b, column).tolist()


def test_history_pages_through_a_limit(client: httpx.Client,
                                       historian: EmbeddedHistorian) -> None:
    params = {"tag": "dma1.inlet.flow", "start": "2024-01-05T00:00:00Z",
              "end": "2024-01-05T01:00:00Z", "limit": 1000}
    pages = []
    for _ in range(10):
        body = client.get("/history", params=params).json()
        pages.append(body)
        if not body["truncated"]:
            break
        params["start"] = body["next_start"]
    assert [p["rows"] for p in pages] == [1000, 1000, 1000, 600]
    assert [ts for p in pages for ts in p["ts"]] == expected_raw(
        historian, "dma1.inlet.flow", T0, T0 + HOUR)["ts"]


def test_history_csv(client: httpx.Client, historian: EmbeddedHistorian) -> None:
    r = client.get("/history", params={"tag": "dma1.inlet.flow", "start": "2024-01-05",
                                       "end": "2024-01-05T00:05:00Z", "format": "csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(r.text)))
    assert rows[0] == ["timestamp", "tag", "unit", "value", "quality"]
    expected = expected_raw(historian, "dma1.inlet.flow", T0, T0 + 300 * NS)
    assert [r[0] for r in rows[1:]] == expected["ts"]
    assert {(r[1], r[2]) for r in rows[1:]} == {("dma1.inlet.flow", "m3/h")}
    assert [float(r[3]) if r[3] else None for r in rows[1:]] == expected["value"]
    assert rows[90][4] == "uncertain" and rows[98][3:] == ["", "bad"]  # readings 89 and 97


def test_history_of_a_tag_without_readings(client: httpx.Client) -> None:
    body = client.get("/history", params={"tag": "dma1.pressure", "bucket": "1min"}).json()
    assert (body["rows"], body["ts"], body["mean"]) == (0, [], [])


# --- bad parameters: 4xx naming the parameter, never 5xx ------------------------------------

P = "dma1.pressure"


@pytest.mark.parametrize(("path", "params", "code", "param", "mentions"), [
    ("/history", {}, 422, "tag", "required"),
    ("/history", {"tag": "no.such.tag"}, 404, "tag", "'no.such.tag'"),
    ("/history", {"tag": P, "start": "-1x"}, 400, "start", "'-1x' is not a duration"),
    # durations beyond a float (issue 13, D10): a 4xx naming the parameter, not a 500
    ("/history", {"tag": P, "start": "-" + "9" * 400 + "d"}, 400, "start",
     "too long a duration"),
    ("/history", {"tag": P, "bucket": "9" * 400 + "d"}, 400, "bucket", "too long a duration"),
    ("/history", {"tag": P, "bucket": "1e400s"}, 400, "bucket", "is not a duration"),
    ("/history", {"tag": P, "start": "yesterday"}, 400, "start", "relative time such as -1h"),
    ("/history", {"tag": P, "start": "2024-02-30"}, 400, "start", "day is out of range"),
    ("/history", {"tag": P, "start": "9999-01-01"}, 400, "start", "outside"),
    ("/history", {"tag": P, "end": "1h"}, 400, "end", "'1h' is not a time"),
    ("/history", {"tag": P, "start": "2024-01-05T01:00Z", "end": "2024-01-05T00:00Z"}, 400,
     "start", "is not before end"),
    ("/history", {"tag": P, "start": "now"}, 400, "start", "is not before end"),
    ("/history", {"tag": P, "bucket": "1x"}, 400, "bucket", "'1x' is not a duration"),
    ("/history", {"tag": P, "bucket": "0s"}, 400, "bucket", "positive"),
    ("/history", {"tag": P, "bucket": "10ms"}, 400, "bucket", "360,000 buckets"),
    ("/history", {"tag": P, "bucket": "1min", "agg": "median"}, 400, "agg", "'median'"),
    ("/history", {"tag": P, "agg": "mean"}, 400, "agg", "need a bucket"),
    ("/history", {"tag": P, "limit": 0}, 422, "limit", "greater than or equal to 1"),
    ("/history", {"tag": P, "limit": 1_000_001}, 422, "limit", "less than or equal"),
    ("/history", {"tag": P, "limit": "many"}, 422, "limit", "integer"),
    ("/history", {"tag": P, "format": "xml"}, 422, "format", "'json' or 'csv'"),
    ("/points", {"kind": "flux"}, 422, "kind", "'pressure'"),
    ("/points", {"zone": "dma9"}, 404, "zone", "'dma9' is not a zone of this site (known: "
                                                "dma1, feeder1)"),
    ("/points", {"device": "plc9"}, 404, "device", "'plc9'"),
    ("/latest", {"tag": [P, "no.such.tag"]}, 404, "tag", "'no.such.tag'"),
    ("/latest", {"zone": "dma9"}, 404, "zone", "'dma9'"),
])
def test_bad_parameters_name_themselves(client: httpx.Client, path: str, params: dict,
                                        code: int, param: str, mentions: str) -> None:
    r = client.get(path, params=params)
    assert r.status_code == code, r.text
    detail = r.json()["detail"]
    assert detail.startswith(f"{param}: ") and mentions in detail, detail


# --- health -------------------------------------------------------------------------------

def status_file(tmp: Path, gs: GatewayStatus | None, age: float = 0.0,
                text: str | None = None) -> Callable[[], dict | None]:
    """A separate API process's source: `status.json` as the gateway writes it."""
    path = tmp / "status.json"
    path.unlink(missing_ok=True)
    if gs is not None:
        gs.write(path)
        snap = json.loads(path.read_text())
        path.write_text(json.dumps({**snap, "updated": snap["updated"] - age}))
    if text is not None:
        path.write_text(text)
    return lambda: read_snapshot(path)


@pytest.mark.parametrize(("case", "code", "overall", "reasons", "states"), [
    ("plc2 down", 200, "degraded", ["device plc2 is down: timeout"], ["ok", "down"]),
    ("all ok", 200, "ok", [], ["ok", "ok"]),
    ("all down", 200, "down", ["device plc1 is down: timeout", "device plc2 is down: timeout"],
     ["down", "down"]),
    ("plc1 not polled yet", 200, "degraded", ["device plc1 is not polled yet"], ["unknown", "ok"]),
    ("sink behind", 200, "degraded", ["sink historian is 125 s behind the spool"], ["ok", "ok"]),
    ("file fresh", 200, "degraded", ["device plc2 is down: timeout"], ["ok", "down"]),
    ("file stale", 503, "down", ["gateway status is 60 s old: the gateway is not running"],
     ["unknown", "unknown"]),
    ("file absent", 503, "down", ["no gateway status: the gateway is not running"],
     ["unknown", "unknown"]),
    ("file garbage", 503, "down", ["no gateway status: the gateway is not running"],
     ["unknown", "unknown"]),
])
def test_health(client: httpx.Client, status: StatusBox, tmp_path: Path, case: str, code: int,
                overall: str, reasons: list[str], states: list[str]) -> None:
    status.source = {
        "plc2 down": lambda: gateway_status().snapshot,
        "all ok": lambda: gateway_status(plc2="ok").snapshot,
        "all down": lambda: gateway_status(plc1="down").snapshot,
        "plc1 not polled yet": lambda: gateway_status(plc1="unknown", plc2="ok").snapshot,
        "sink behind": lambda: gateway_status(plc2="ok", sink_lag=125.4).snapshot,
        "file fresh": lambda: status_file(tmp_path, gateway_status()),
        "file stale": lambda: status_file(tmp_path, gateway_status(), age=60),
        "file absent": lambda: status_file(tmp_path, None),
        "file garbage": lambda: status_file(tmp_path, None, text="{not json"),
    }[case]()
    r = client.get("/health")
    assert r.status_code == code
    body = Health.model_validate(r.json()).model_dump()
    # The stale snapshot's age is whole seconds since it was written: 60, or 61 on a slow run.
    got = [re.sub(r"is 6[01] s old", "is 60 s old", r) for r in body["reasons"]]
    assert (body["status"], got) == (overall, reasons)
    assert [d["name"] for d in body["devices"]] == ["plc1", "plc2"]
    assert [d["state"] for d in body["devices"]] == states
    gw = body["gateway"]
    assert gw["running"] == (code == 200)
    if code == 200:
        assert 100 < gw["uptime_seconds"] < 3600 and gw["started"].endswith("Z")
        plc1 = body["devices"][0]
        assert (plc1["polls_total"], plc1["request_errors_total"], plc1["requests_total"]) == (
            100, {"timeout": 2, "illegal_data_address": 1}, 5)
        assert plc1["last_success"].endswith("Z")
        assert body["sinks"][0]["readings_total"] == 4500 and body["spool"]["bytes"] == 65536


def test_health_calls_a_device_without_a_recent_success_down(client: httpx.Client,
                                                              status: StatusBox) -> None:
    """Its driver last said ok, but its poller has not succeeded for longer than its stale
    window (a poller that stopped says nothing): down, saying since when."""
    gs = gateway_status(plc2="ok")
    gs.devices["plc1"].stale_after_seconds = 3.0
    gs.devices["plc1"].last_success = time.time() - 42
    status.source = gs.snapshot
    body = client.get("/health").json()
    assert [d["state"] for d in body["devices"]] == ["down", "ok"]
    assert body["status"] == "degraded"
    assert re.fullmatch(r"device plc1 is down: no successful poll for 4[23] s \(stale after "
                        r"3 s\)", body["reasons"][0]), body["reasons"]


@pytest.mark.parametrize("caller", ["no token", "bad token"])
def test_health_tells_anyone_only_ok_degraded_or_down(server: str, status: StatusBox,
                                                      caller: str) -> None:
    """Device addresses and error text are for viewers and above."""
    headers = {"Authorization": "Bearer sw_" + "x" * 43} if caller == "bad token" else {}
    status.source = gateway_status().snapshot  # plc2 down: reasons and addresses to hide
    r = httpx.get(server + "/api/v1/health", headers=headers, timeout=30)
    assert (r.status_code, r.json()) == (200, {"status": "degraded"})
    status.source = lambda: None
    r = httpx.get(server + "/api/v1/health", headers=headers, timeout=30)
    assert (r.status_code, r.json()) == (503, {"status": "down"})


def test_health_reports_a_status_that_does_not_fit(client: httpx.Client,
                                                   status: StatusBox) -> None:
    snap = gateway_status().snapshot()
    status.source = lambda: {**snap, "devices": {"plc1": {"name": "plc1", "state": "asleep"}}}
    r = client.get("/health")
    assert r.status_code == 503
    assert r.json()["reasons"][0].startswith("gateway status unreadable")


# --- metrics ------------------------------------------------------------------------------

def scrape(client: httpx.Client) -> dict[str, dict[tuple, float]]:
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(r.text):
        assert family.name.startswith("scadawatch_")
        for s in family.samples:
            if family.type == "counter":
                assert s.name.endswith("_total")
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def test_metrics(client: httpx.Client, status: StatusBox, site: Site) -> None:
    gs = gateway_status()
    status.source = gs.snapshot
    m = scrape(client)
    labels = {k for samples in m.values() for key in samples for k, _ in key}
    assert labels <= {"device", "sink", "cause", "state", "le"}  # never per tag
    values = {v for samples in m.values() for key in samples for _, v in key}
    assert not values & {p.tag for p in site.points}
    assert m["scadawatch_gateway_up"] == {(): 1.0}
    assert m["scadawatch_device_up"] == {(("device", "plc1"),): 1.0, (("device", "plc2"),): 0.0}
    assert m["scadawatch_device_polls_total"][(("device", "plc1"),)] == 100
    assert m["scadawatch_device_poll_errors_total"][(("device", "plc2"),)] == 3
    assert m["scadawatch_device_request_errors_total"] == {
        (("cause", c), ("device", d)): n for d in ("plc1", "plc2")
        for c, n in (("illegal_data_address", 1), ("timeout", 2))}
    assert m["scadawatch_device_state"][(("device", "plc2"), ("state", "down"))] == 1.0
    plc1 = (("device", "plc1"),)
    buckets = m["scadawatch_device_request_duration_seconds_bucket"]
    assert buckets[(("device", "plc1"), ("le", "0.001"))] == 1
    assert buckets[(("device", "plc1"), ("le", "0.005"))] == 3
    assert buckets[(("device", "plc1"), ("le", "+Inf"))] == 5
    assert m["scadawatch_device_request_duration_seconds_count"][plc1] == 5
    assert m["scadawatch_device_request_duration_seconds_sum"][plc1] == pytest.approx(3.2064)
    assert m["scadawatch_device_readings_total"][plc1] == 300
    assert m["scadawatch_sink_readings_total"] == {(("sink", "historian"),): 4500}
    assert m["scadawatch_sink_backlog_readings"] == {(("sink", "historian"),): 10}
    assert m["scadawatch_spool_bytes"] == {(): 65536}
    assert m["scadawatch_spool_readings_dropped_total"] == {(): 0}
    assert "scadawatch_spool_oldest_age_seconds" in m
    assert m["scadawatch_anomaly_events_total"] == {(): 7}
    assert m["scadawatch_anomaly_clock_ahead_readings_total"] == {(): 2}
    assert m["scadawatch_anomaly_late_readings_total"] == {(): 3}


def test_metrics_without_a_gateway(client: httpx.Client, status: StatusBox) -> None:
    status.source = lambda: None
    assert scrape(client) == {"scadawatch_gateway_up": {(): 0.0}}


# --- documentation and the server ---------------------------------------------------------

def test_openapi_and_docs(server: str) -> None:
    with httpx.Client(base_url=server, timeout=30) as c:
        spec = c.get("/openapi.json").json()
        docs = c.get("/docs")
        root = c.get("/")
        assets = [c.get(f"/{name}") for name in ("app.js", "style.css",
                                                 "vendor/uplot/uPlot.iife.min.js")]
    assert {"/api/v1/health", "/api/v1/points", "/api/v1/latest", "/api/v1/history",
            "/api/v1/metrics"} <= set(spec["paths"])
    assert "columns" in spec["paths"]["/api/v1/history"]["get"]["description"]
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    # The control-room page and everything it loads come from the API itself: no CDN.
    assert root.status_code == 200 and "scadawatch control room" in root.text
    assert [a.status_code for a in assets] == [200, 200, 200]
    assert "http" not in root.text.replace("http-equiv", "")


def test_server_stops_cleanly_and_frees_its_port(site: Site,
                                                 historian: EmbeddedHistorian) -> None:
    app = create_app(site, historian, lambda: None)
    with running(app) as (url, outcome):
        assert httpx.get(url + "/api/v1/health", timeout=30).status_code == 503
        port = int(url.rsplit(":", 1)[1])
    with pytest.raises(asyncio.CancelledError):
        outcome.result(timeout=0)
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_server_names_a_port_in_use(site: Site, historian: EmbeddedHistorian,
                                    server: str) -> None:
    port = int(server.rsplit(":", 1)[1])
    with (pytest.raises(OSError, match=f"API cannot listen on 127.0.0.1:{port}"),
          running(create_app(site, historian, lambda: None), port=port)):
        pass


def test_run_exits_1_naming_the_api_port_in_use(tmp_path: Path) -> None:
    """`scadawatch run` without its API is no use (systemd restarts it on exit 1)."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        config = tmp_path / "site.toml"
        config.write_text(f'[site]\nname = "busy"\ndata_dir = "data"\n\n'
                          f'[api]\nport = {port}\n')
        run = subprocess.run([sys.executable, "-m", "scadawatch", "run", "--config", str(config)],
                             capture_output=True, text=True, timeout=60)
    assert run.returncode == 1, run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last == (f"scadawatch run: error: API cannot listen on 127.0.0.1:{port}: "
                    "Address already in use"), run.stderr


def test_app_refuses_a_reader_with_other_tags(site: Site, tmp_path: Path) -> None:
    other = EmbeddedHistorian(tmp_path / "h.sqlite", [p.tag for p in reversed(site.points)])
    try:
        with pytest.raises(ValueError, match="site's tags"):
            create_app(site, other, lambda: None)
    finally:
        other.close()
