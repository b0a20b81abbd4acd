"""The InfluxDB historian against real servers on loopback: InfluxDB 1.6 (`influxd`, api v1
and InfluxQL reads) and VictoriaMetrics (api v2)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from support.harness import (
    POINT_LIST_CHANGES,
    RUN_LIMIT,
    auth_headers,
    gateway_site,
    historian_readings,
    running,
    spool_under_each,
    start_and_stop,
    start_simulator,
)
from support.ingest_faults import PASSWORD, USER, influx_count, stored_counts, with_influx
from support.peers.influx_servers import Influxd, Victoria, influxd, victoria

from anomaly.core.batch import Batch, Quality
from api.app import create_app
from gateway.data_dir import progress_path
from gateway.runtime import Gateway
from gateway.site.loader import load_site
from gateway.site.model import HistorianSection, Point, Site, SiteSection
from gateway.status import SinkStatus, SpoolStatus
from gateway.storage.historian import EmbeddedHistorian
from gateway.storage.influxdb.catchup import LiveFirst
from gateway.storage.influxdb.reader import InfluxReader
from gateway.storage.influxdb.sink import (
    READINGS,
    InfluxRejected,
    InfluxSink,
    InfluxUnavailable,
    SeriesKeys,
    compresses,
    escape_tag,
    line_protocol,
    precision_of,
)
from gateway.storage.spool import Spool

T0 = 1_772_000_000 * 10**9  # 2026-02-25, whole seconds
POINTS = [
    Point(tag="PT-101", device="rtu 1", kind="pressure", unit="bar", zone="north,low"),
    Point(tag="FT=201", device="rtu 1", kind="flow", unit="m3/h", zone="north,low"),
    Point(tag="LT 301", device="plc\\2", kind="level", unit="m"),
    Point(tag="bare"),  # no zone, device or unit: those tag keys are left out
]


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFLUX_PASSWORD", PASSWORD)
    monkeypatch.setenv("INFLUX_TOKEN", "any-token")


@pytest.fixture(scope="module")
def influx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Influxd]:
    """One influxd with auth on for the module; each test uses its own database."""
    server = influxd(tmp_path_factory.mktemp("influxd"), user=USER, password=PASSWORD)
    yield server
    server.stop()


def make_site(tmp_path: Path, historian: HistorianSection, points: list[Point] = POINTS,
              **site: object) -> Site:
    return Site(site=SiteSection(name="plant 1", data_dir=tmp_path / "data"),
                historian=historian, points=points, **site)


def v1(influx: Influxd, database: str, **kw: object) -> HistorianSection:
    return HistorianSection(**{"kind": "influxdb", "api": "v1", "url": influx.url,
                               "database": database, "username": USER, **kw})


def stored_rows(influx: Influxd, database: str, fields: str) -> list[dict]:
    """Every reading stored, oldest first, as a dict by column, with its `measurement`."""
    return sorted(({"measurement": s["name"], **dict(zip(s["columns"], v, strict=True))}
                   for s in influx.query(f"SELECT {fields} FROM {READINGS}", db=database)
                   for v in s["values"]), key=lambda r: r["time"])


class Acks:
    """The spool's side of the sink's cursor, for tests that call `store` directly."""

    def acked(self, name: str) -> int:
        return 0


def recording(n: int = 2000) -> Batch:
    """Readings of every point every second, with uncertain and bad ones among them."""
    rng = np.random.default_rng(5)
    k = len(POINTS)
    point = np.tile(np.arange(k), n)
    ts = T0 + np.repeat(np.arange(n), k) * 10**9 + point * 1000
    value = rng.normal(50, 20, n * k).round(6)
    quality = rng.choice([Quality.GOOD, Quality.UNCERTAIN, Quality.BAD], n * k, p=[.9, .05, .05])
    cause = np.where(quality == Quality.GOOD, 0, rng.integers(1, 9, n * k))
    value[quality == Quality.BAD] = np.nan
    return Batch.of(source_ts=ts, point=point, value=value, quality=quality, cause=cause,
                    server_ts=ts + 2_000_000, gateway_ts=ts + 5_000_000)


@pytest.mark.parametrize("timestamp_fields", [[], ["server", "gateway"]])
def test_every_field_and_tag_round_trips_through_influxql(
        tmp_path: Path, influx: Influxd, database: str, timestamp_fields: list[str]) -> None:
    batch = Batch.of(source_ts=T0 + np.arange(7), point=[0, 1, 2, 3, 0, 1, 2],
                     value=[1.5, -2.25e-7, 1e16, np.nan, 0.0, np.nan, -np.inf],
                     quality=[0, 1, 0, 2, 0, 1, 0], cause=[0, 7, 0, 0x80310000, 0, 3, 0],
                     server_ts=T0 + 10**8 + np.arange(7), gateway_ts=T0 + 10**9 + np.arange(7))
    site = make_site(tmp_path, v1(influx, database, timestamp_fields=timestamp_fields))
    InfluxSink(site, Acks(), SinkStatus("influxdb")).store([(1, batch)])
    rows = stored_rows(influx, database, "*")
    assert [r["time"] for r in rows] == batch.source_ts.tolist()
    # No finite value (bad, or NaN/inf from the device): no value field, never a number.
    assert [r["value"] for r in rows] == [1.5, -2.25e-7, 1e16, None, 0.0, None, None]
    # Quality and cause only where the reading is not plainly good.
    assert [r["quality"] for r in rows] == [None, 1, None, 2, None, 1, 0]
    assert [r["cause"] for r in rows] == [None, 7, None, 0x80310000, None, 3, 0]
    for name in ("server", "gateway"):
        stamps = getattr(batch, f"{name}_ts").tolist()
        assert [r.get(f"{name}_ts") for r in rows] == (
            stamps if name in timestamp_fields else [None] * len(rows))
    for r, i in zip(rows, batch.point.tolist(), strict=True):
        p = POINTS[i]  # the point's kind is the measurement; unit and site stay in the site file
        assert (r["measurement"], r["tag"], r["zone"], r["device"]) == (
            p.kind, p.tag, p.zone, p.device)
        assert not {"site", "unit", "kind"} & set(r)


@pytest.mark.parametrize("gzip", [False, True])
@pytest.mark.parametrize(("stamps", "digits"), [
    ([T0, T0 + 10**9], 10), ([T0 + 10**6, T0 + 2 * 10**6], 13),
    ([T0 + 1000, T0 + 10**6], 16), ([T0 + 1, T0 + 10**6], 19)])
def test_timestamps_are_written_no_finer_than_stamped_and_read_back_exactly(
        tmp_path: Path, influx: Influxd, database: str, stamps: list[int], digits: int,
        gzip: bool) -> None:
    batch = Batch.of(source_ts=stamps, point=[0, 1], value=[1.0, 2.0], quality=0)
    site = make_site(tmp_path, v1(influx, database, gzip=gzip))
    lines = line_protocol(SeriesKeys.of(site), batch, precision_of(batch.source_ts).ns)
    assert [len(line.rsplit(" ", 1)[1]) for line in lines] == [digits, digits]
    assert lines[0] == (r"pressure,device=rtu\ 1,tag=PT-101,zone=north\,low value=1.0 "
                        f"{stamps[0] // 10**(19 - digits)}")
    InfluxSink(site, Acks(), SinkStatus("influxdb")).store([(1, batch)])
    assert [r["time"] for r in stored_rows(influx, database, "value")] == stamps


@pytest.mark.parametrize(("url", "gzip", "compressed"), [
    ("http://127.0.0.1:8086", None, False), ("http://[::1]:8086", None, False),
    ("http://localhost:8086", None, False), ("https://10.1.2.3:8086", None, True),
    ("https://influx.utility.example", None, True), ("http://127.0.0.1:8086", True, True),
    ("https://influx.utility.example", False, False)])
def test_bodies_are_gzipped_when_they_cross_a_network_unless_set(
        url: str, gzip: bool | None, compressed: bool) -> None:
    h = HistorianSection(kind="influxdb", api="v1", url=url, database="d", gzip=gzip)
    assert compresses(h) == compressed


@pytest.mark.parametrize("timestamp_fields", [[], ["server", "gateway"]])
def test_history_and_latest_from_influxdb_equal_the_embedded_historians(
        tmp_path: Path, influx: Influxd, database: str, timestamp_fields: list[str]) -> None:
    site = make_site(tmp_path, v1(influx, database, timestamp_fields=timestamp_fields))
    batch = recording()
    embedded = EmbeddedHistorian(tmp_path / "h.sqlite", [p.tag for p in POINTS])
    embedded.store([(1, batch)])
    InfluxSink(site, Acks(), SinkStatus("influxdb")).store([(1, batch)])
    reader = InfluxReader(site)
    queries = [f"/api/v1/history?tag={p.tag}&start=2026-02-25T06:00:00Z&end="
               f"2026-02-25T06:30:00Z{extra}" for p in POINTS for extra in (
                   "", "&limit=700", "&bucket=1min&agg=count,min,max,first,last",
                   "&bucket=7s&agg=mean")]
    queries += ["/api/v1/latest", "/api/v1/latest?zone=north,low"]
    answers = []
    for historian in (embedded, reader):
        with (running(create_app(site, historian, lambda: None)) as (url, _),
              httpx.Client(base_url=url, timeout=30,
                           headers=auth_headers(site.site.data_dir, "viewer")) as client):
            answers.append([client.get(q) for q in queries])
    for q, a, b in zip(queries, *answers, strict=True):
        assert a.status_code == b.status_code == 200, (q, a.text, b.text)
        a, b = a.json(), b.json()
        a.pop("time", None), b.pop("time", None)
        for reading in a.get("readings", []):
            for name in {"server", "gateway"} - set(timestamp_fields):
                # Not written: InfluxDB knows the source time only.
                reading[f"{name}_ts"] = reading["source_ts"]
        if "mean" in a:
            assert b.pop("mean") == pytest.approx(a.pop("mean"), rel=1e-12), q
        assert a == b, q
    assert answers[0][0].json()["rows"] == 1000  # the range ends 1,000 s into the recording
    embedded.close()
    reader.close()


def five_field_line(p: Point, batch: Batch, i: int) -> str:
    """Reading `i` of `batch` as the schema before the lean one wrote it."""
    tags = {"device": p.device, "kind": p.kind, "site": "plant 1", "tag": p.tag,
            "unit": p.unit, "zone": p.zone}
    key = "readings" + "".join(f",{k}={escape_tag(v)}" for k, v in tags.items() if v)
    q, c = int(batch.quality[i]), int(batch.cause[i])
    fields = ([f"value={float(batch.value[i])!r}"] if q != Quality.BAD else []) + [
        f"quality={q}i", f"cause={c}i", f"server_ts={int(batch.server_ts[i])}i",
        f"gateway_ts={int(batch.gateway_ts[i])}i"]
    return f"{key} {','.join(fields)} {int(batch.source_ts[i])}"


def test_readmes_migration_copies_five_field_history_where_the_reader_finds_it(
        tmp_path: Path, influx: Influxd, database: str) -> None:
    site = make_site(tmp_path, v1(influx, database, timestamp_fields=["server", "gateway"]))
    batch = recording(50)
    body = "\n".join(five_field_line(POINTS[p], batch, i)
                     for i, p in enumerate(batch.point.tolist()))
    urllib.request.urlopen(urllib.request.Request(
        f"{influx.url}/write?db={database}&u={USER}&p={PASSWORD}", data=body.encode(),
        method="POST"))
    readme = (Path(__file__).resolve().parents[3] / "docs" / "gateway.md").read_text()
    statements = re.search(r"```sql\n(.*?)```", readme, re.S).group(1).splitlines()
    for kind in sorted({p.kind for p in POINTS}):
        for statement in statements:
            influx.query(statement.replace("'flow'", f"'{kind}'").replace(
                'INTO "flow"', f'INTO "{kind}"'), db=database, method="POST")
    reader = InfluxReader(site)
    for i, p in enumerate(POINTS):
        got = reader.history(p.tag, T0, T0 + 10**12)
        mine = batch.take(batch.point == i)
        np.testing.assert_array_equal(got.source_ts, mine.source_ts)
        np.testing.assert_array_equal(got.value, mine.value)
        np.testing.assert_array_equal(got.quality, mine.quality)
        np.testing.assert_array_equal(got.cause, mine.cause)
    reader.close()


@pytest.fixture
def vm(tmp_path: Path) -> Iterator[Victoria]:
    """A VictoriaMetrics of the test's own: its v2 write endpoint takes what InfluxDB 2.x does."""
    server = victoria(tmp_path / "vm")
    yield server
    server.stop()


def v2(vm: Victoria, **kw: object) -> HistorianSection:
    return HistorianSection(**{"kind": "influxdb", "api": "v2", "url": vm.url, "bucket": "b",
                               "org": "o", **kw})


# sends = 2: the batch re-sent (after a crash, or a timed-out write that had landed) is stored
# once, as docs/gateway.md says of VictoriaMetrics started with its dedup at 1 ms
@pytest.mark.parametrize(("gzip", "sends"), [(False, 1), (True, 1), (False, 2)])
def test_v2_writes_reach_victoria_metrics(tmp_path: Path, vm: Victoria, gzip: bool,
                                          sends: int) -> None:
    site = make_site(tmp_path, v2(vm, gzip=gzip))
    # An hour ago: VictoriaMetrics drops samples older than its retention, and hides the
    # last 30 s from reads.
    now = (time.time_ns() // 10**9 - 3600) * 10**9
    batch = recording(50)
    batch = Batch(**{k: getattr(batch, k) for k in Batch.DTYPES}
                  | {"source_ts": batch.source_ts - T0 + now})
    sink = InfluxSink(site, Acks(), SinkStatus("influxdb"))
    sink.probe()
    for _ in range(sends):
        sink.store([(1, batch)])
    exported = vm.export('{__name__=~"(pressure|flow|level|other)_.*"}')
    got = {(s["metric"]["__name__"], s["metric"]["tag"], t): v for s in exported
           for t, v in zip(s["timestamps"], s["values"], strict=True)}
    want = {}
    for i, p in enumerate(batch.point.tolist()):
        t = int(batch.source_ts[i]) // 10**6
        kind, tag = POINTS[p].kind, POINTS[p].tag
        if batch.quality[i] != Quality.GOOD:
            want[(f"{kind}_quality", tag, t)] = int(batch.quality[i])
            want[(f"{kind}_cause", tag, t)] = int(batch.cause[i])
        if batch.quality[i] != Quality.BAD:
            want[(f"{kind}_value", tag, t)] = float(batch.value[i])
    assert got == want
    assert sum(len(s["timestamps"]) for s in exported) == len(want)


@pytest.mark.parametrize(("change", "error", "message"), [
    ({"username": "intruder"}, InfluxRejected, "credentials refused: check user 'intruder'"),
    ({"database": "no_such_db"}, InfluxRejected, "database not found"),
    ({"url": "http://127.0.0.1:1"}, InfluxUnavailable, "unreachable"),
])
def test_bad_settings_are_reported_clearly_at_start(
        tmp_path: Path, influx: Influxd, database: str, change: dict, error: type,
        message: str) -> None:
    h = v1(influx, database).model_copy(update=change)
    sink = InfluxSink(make_site(tmp_path, h), Acks(), SinkStatus("influxdb"))
    with pytest.raises(error, match=message):
        sink.probe()


def test_gateway_health_shows_refused_credentials(tmp_path: Path, influx: Influxd,
                                                  database: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gateway.runtime.FLUSH_TIMEOUT", 0.5)  # InfluxDB will not catch up
    site = make_site(tmp_path, v1(influx, database, username="intruder"), points=[])

    async def run() -> SinkStatus:
        gateway, stop = Gateway(site), asyncio.Event()
        task = asyncio.create_task(gateway.run(stop))
        for _ in range(100):  # bounded: the probe runs first thing
            if gateway.status.sinks["influxdb"].last_error:
                break
            await asyncio.sleep(0.05)
        stop.set()
        await task
        return gateway.status.sinks["influxdb"]

    status = asyncio.run(run())
    assert status.last_error is not None and "credentials refused" in status.last_error


def test_a_refused_point_is_quarantined_and_the_rest_flows(
        tmp_path: Path, influx: Influxd, database: str) -> None:
    # Someone wrote an integer `value` into a later shard (one hour each here): InfluxDB
    # refuses our float values there.
    influx.query(f'ALTER RETENTION POLICY "autogen" ON "{database}" SHARD DURATION 1h',
                 method="POST")
    later = T0 + 7200 * 10**9
    urllib.request.urlopen(urllib.request.Request(
        f"{influx.url}/write?db={database}&u={USER}&p={PASSWORD}",
        data=f"level,tag=other value=1i {later - 1}".encode(), method="POST"))
    batch = recording(100)
    ts = batch.source_ts.copy()
    ts[6] = later
    assert batch.quality[6] == Quality.GOOD and POINTS[batch.point[6]].kind == "level"
    batch = Batch(**{k: getattr(batch, k) for k in Batch.DTYPES} | {"source_ts": ts})
    status = SinkStatus("influxdb")
    InfluxSink(make_site(tmp_path, v1(influx, database, batch_size=64)), Acks(),
               status).store([(1, batch)])

    refused = np.arange(len(batch)) == 6
    counts = influx_count(influx, database, where='"tag" != \'other\'')
    expected = {p.tag: int(((batch.point == i) & ~refused).sum()) for i, p in enumerate(POINTS)}
    assert counts == expected
    assert status.quarantined_total == 1
    kept = (tmp_path / "data" / "influxdb-quarantine.lp").read_text()
    assert "field type conflict" in kept and f"value={float(batch.value[6])!r} " in kept


@pytest.mark.parametrize("lists", POINT_LIST_CHANGES.values(), ids=POINT_LIST_CHANGES.keys())
def test_backlog_under_earlier_point_lists_keeps_its_series_in_influxdb(
        tmp_path: Path, influx: Influxd, database: str, lists: list[list[str]]) -> None:
    def site_of(tags: list[str]) -> Site:
        return make_site(tmp_path, v1(influx, database),
                         points=[Point(tag=t, unit=f"u-{t}", zone=f"z-{t}") for t in tags])

    expected = spool_under_each(lists, site_of)
    current = site_of(lists[-1])
    start_and_stop(current)
    series = influx.query('SELECT value, zone FROM "other" GROUP BY "tag"', db=database)
    got = {s["tags"]["tag"]: s["values"] for s in series}
    # A removed point's readings keep the labels it was polled under (its zone).
    assert {t: [(ts, v) for ts, v, _ in rows] for t, rows in got.items()} == {
        t: v for t, v in expected.items() if v}
    assert all(zone == f"z-{t}" for t, rows in got.items() for _, _, zone in rows)
    assert historian_readings(current, sorted(expected)) == expected


class Backlog:
    """A spool with a backlog of `recording()` readings (400 a record) and a live feed
    after it, drained into InfluxDB step by step (`LiveFirst.step`, as the gateway does)."""

    RECORD = 100  # seconds of `recording()` per record: 400 readings

    def __init__(self, site: Site, seconds: int) -> None:
        self.site = site
        self.spool = Spool(site.site.data_dir / "spool", site.spool, SpoolStatus())
        self.spool.use_points(site.points)
        self.readings = recording(seconds + 100 * self.RECORD)
        self.appended = 0  # seconds of the recording spooled
        self.append(seconds)
        self.open_lanes()

    def open_lanes(self) -> None:
        self.status = SinkStatus("influxdb")
        self.sink = InfluxSink(self.site, self.spool, self.status)
        self.lanes = LiveFirst(self.spool, self.sink, self.status, progress_path(self.site),
                               self.site.historian.max_rate)

    def append(self, seconds: int) -> int:
        """Spool the next `seconds` of the recording; return the newest reading's time."""
        k = len(POINTS)
        for a in range(self.appended, self.appended + seconds, self.RECORD):
            b = min(a + self.RECORD, self.appended + seconds)
            self.spool.append(self.readings.take(slice(a * k, b * k)))
        self.appended += seconds
        return int(self.readings.source_ts[self.appended * k - 1])

    def restart(self) -> None:
        """As after kill -9: whatever the sink knew only in memory is gone."""
        self.sink.close()
        self.spool.close()
        self.spool = Spool(self.site.site.data_dir / "spool", self.site.spool, SpoolStatus())
        self.open_lanes()

    def close(self) -> None:
        self.sink.close()
        self.spool.close()


def in_influx(influx: Influxd, database: str, where: str = "") -> tuple[int, int | None]:
    """(readings, newest time) in InfluxDB, with an optional condition."""
    newest = [s["values"][0][0] for field in ("value", "quality") for s in influx.query(
        f"SELECT last({field}) FROM {READINGS} {'WHERE ' + where if where else ''}",
        db=database)]
    return sum(influx_count(influx, database, where).values()), max(newest, default=None)


def test_live_readings_overtake_a_backlog_that_still_arrives_whole_and_oldest_first(
        tmp_path: Path, influx: Influxd, database: str) -> None:
    # 40,000 readings of backlog at 8,000/s: five turns of the backlog lane.
    site = make_site(tmp_path, v1(influx, database, max_rate=8000.0, batch_size=1000))
    backlog = Backlog(site, 10_000)
    end_of_backlog = int(backlog.readings.source_ts[10_000 * len(POINTS) - 1])
    k = len(POINTS)
    try:
        for step in range(1, 100):  # bounded: the backlog takes five steps
            newest = backlog.append(5)  # the live feed: 20 readings a step
            backlog.lanes.step()
            stored, last_old = in_influx(influx, database, f"time <= {end_of_backlog}")
            if stored == 10_000 * k:
                break
            # The newest reading is in InfluxDB while the backlog is still draining...
            assert in_influx(influx, database)[1] == newest, step
            assert 0 < backlog.status.backlog_readings <= 10_000 * k - stored
            # ...which arrives oldest first: what is there is all there is up to its newest.
            assert stored == int((backlog.readings.source_ts[:10_000 * k] <= last_old).sum())
            if step == 2:
                backlog.restart()  # the progress, live ranges included, survives
        else:
            raise AssertionError("the backlog never drained")
        assert step > 3 and backlog.status.backlog_readings <= 20
        backlog.append(5)
        backlog.lanes.step()
        assert backlog.status.backlog_readings == 0 and not backlog.lanes.progress.ranges
        assert backlog.sink.cursor() == backlog.spool.last_seq  # acked: retention may drop it
    finally:
        backlog.close()
    produced = backlog.readings.take(slice(0, backlog.appended * k))
    assert influx_count(influx, database) == {
        p.tag: int((produced.point == i).sum()) for i, p in enumerate(POINTS)}


# --- store and forward with real processes ---------------------------------------------------

def catch_up(site: Site) -> None:
    """Drain what the spool still holds for InfluxDB, from the sink's own progress."""
    spool = Spool(site.site.data_dir / "spool", site.spool, SpoolStatus())
    sink = InfluxSink(site, spool, SinkStatus("influxdb"))
    lanes = LiveFirst(spool, sink, SinkStatus("influxdb"), progress_path(site),
                      site.historian.max_rate)
    try:
        for _ in range(10_000):  # bounded; each step moves the progress on
            lanes.step()
            if sink.cursor() == spool.last_seq:
                break
    finally:
        sink.close()
        spool.close()


@pytest.mark.slow
def test_kill_9_during_a_drain_loses_and_duplicates_nothing(tmp_path: Path,
                                                           own_influx: Influxd) -> None:
    server = own_influx
    server.create_database("crash")
    sim, sim_site = start_simulator(tmp_path)
    gw: subprocess.Popen | None = None
    try:
        # A slow drain (500 readings/s, the site makes ~200-330/s): the backlog of an outage
        # takes many seconds to catch up.
        config = with_influx(gateway_site(sim_site, tmp_path), server, "crash",
                             max_rate=500.0, batch_size=250)
        cmd = [sys.executable, "-m", "scadawatch", "gateway", "--config", str(config)]
        env = os.environ | {"INFLUX_PASSWORD": PASSWORD}
        server.stop()
        gw = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env=env)
        time.sleep(20.0)  # a backlog builds while InfluxDB is down
        server.start()
        for _ in range(3):  # bounded: three crashes in the middle of the drain
            deadline = time.monotonic() + RUN_LIMIT
            before = sum(influx_count(server, "crash").values())
            while sum(influx_count(server, "crash").values()) < before + 500:
                assert time.monotonic() < deadline, "the drain made no progress"
                assert gw.poll() is None, "the gateway died on its own"
                time.sleep(0.2)
            # Live readings go first: the backlog shows in what InfluxDB lacks of what the
            # embedded historian (always caught up) holds, not in its newest reading's age.
            behind = (sum(stored_counts(load_site(config)).values())
                      - sum(influx_count(server, "crash").values()))
            assert behind > 500, "the backlog was drained before the crash"
            os.kill(gw.pid, signal.SIGKILL)
            gw.wait()
            gw = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  env=env)
        before = sum(influx_count(server, "crash").values())
        deadline = time.monotonic() + RUN_LIMIT
        while sum(influx_count(server, "crash").values()) == before:  # it runs: stop it
            assert time.monotonic() < deadline, "the last run stored nothing"
            time.sleep(0.2)
        gw.send_signal(signal.SIGTERM)
        _, err = gw.communicate(timeout=RUN_LIMIT)
        assert gw.returncode == 0, err
        site = load_site(config)
        # What a restarted gateway does first, without new polls to count.
        catch_up(site.model_copy(update={"historian": site.historian.model_copy(
            update={"max_rate": 1e9})}))
        assert influx_count(server, "crash") == stored_counts(site)
    finally:
        for proc in (gw, sim):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(timeout=RUN_LIMIT)

