"""The deployment files: the compose file parses (docker-compose, offline), the compose site
file passes check-config, the systemd unit runs the gateway as its own user, and every query
of the Grafana dashboard runs against a real influxd (1.6) filled by the gateway's InfluxDB
sink and alarms writer, returning exactly the points (and alarms) it is meant to show. Docker itself
cannot run here, so InfluxDB 2.7 and Grafana are checked through their files only."""

from __future__ import annotations

import configparser
import json
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from support.alarm_helpers import alarm, cleared, raised
from support.peers.influx_servers import Influxd, influxd

from anomaly.core.batch import Batch, Quality
from gateway.alarms.annotations import AlarmWriter
from gateway.alarms.store import AlarmStore
from gateway.data_dir import store_path
from gateway.site.loader import load_site
from gateway.site.model import HistorianSection, Site, SpoolSection
from gateway.status import SinkStatus, SpoolStatus
from gateway.storage.influxdb.sink import KINDS, READINGS, InfluxSink
from gateway.storage.spool import Spool
from scadawatch.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana/dashboards/scadawatch.json"
DATASOURCE = DEPLOY / "grafana/provisioning/datasources/influxdb.yml"
UNIT = DEPLOY / "scadawatch.service"

TAG_KEYS = {"zone", "device", "tag"}
FIELDS = {"value", "quality", "cause", "server_ts", "gateway_ts"}
ALARM_KEYS = {"site", "kind", "priority", "zone", "tag", "device", "transition",  # tags
              "id", "event_id", "message", "state", "value", "who", "comment"}  # fields
T0 = 1_772_000_000 * 10**9  # 2026-02-25, whole seconds
SECONDS = 60  # of readings written for the dashboard's queries
# Grafana's expansion of its macros, as it sends them to InfluxDB.
TIME_FILTER = f"time >= {T0 // 10**6}ms and time <= {(T0 + SECONDS * 10**9) // 10**6}ms"
MACROS = {"$timeFilter": TIME_FILTER, "$__interval": "10s"}
# What each panel shows: (kind, unit or None for any), within its row's zone or feeder.
PANELS = {"Flows — $zone": ("flow", None), "Pressures — $zone": ("pressure", None),
          "Levels — $zone": ("level", None), "Voltages — $feeder": ("voltage", None),
          "Loading — $feeder": ("other", None)}
NOT_GOOD = ["Readings not good — $zone", "Readings not good — $feeder"]
FLAGGED = 5  # every 5th point has, in every 10 s, one bad reading (no value) and one uncertain
LEAK = alarm("leak", "dma1", T0 + 10 * 10**9)
# (engine event, seconds after T0 it is recorded): the annotations show the two raises.
ALARMS = [(raised(LEAK), 10), (cleared(LEAK, T0 + 30 * 10**9), 30),
          (raised(alarm("comms", "dma2.inlet.flow", T0 + 40 * 10**9, scope="tag")), 40)]


def compose(*args: str) -> str:
    if shutil.which("docker-compose") is None:
        raise RuntimeError("docker-compose is not installed: run tests/run.sh")
    return subprocess.run(["docker-compose", "-f", str(COMPOSE), "config", *args], cwd=ROOT,
                          capture_output=True, text=True, check=True, timeout=60).stdout


@pytest.fixture(scope="module")
def site() -> Site:
    return load_site(DEPLOY / "site.toml")


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def targets(dashboard: dict) -> Iterator[tuple[str, str]]:
    """(panel title, InfluxQL) of every query panel."""
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["query"]


def expand(query: str, **variables: str) -> str:
    for name, value in (MACROS | {f"${k}": v for k, v in variables.items()}).items():
        query = query.replace(name, value)
    return query


@pytest.fixture(scope="module")
def influx(tmp_path_factory: pytest.TempPathFactory, site: Site) -> Iterator[Influxd]:
    """influxd holding a minute of readings of every point of the compose site file, written
    by the gateway's InfluxDB sink in database "scada" (the compose file's DBRP mapping)."""
    tmp = tmp_path_factory.mktemp("deploy")
    server = influxd(tmp / "influxd")
    server.create_database("scada")
    local = site.model_copy(update={
        "site": site.site.model_copy(update={"data_dir": tmp / "data"}),
        "historian": HistorianSection(kind="influxdb", api="v1", url=server.url,
                                      database="scada")})
    k = len(local.points)
    point = np.tile(np.arange(k), SECONDS)
    second = np.repeat(np.arange(SECONDS), k)
    ts = T0 + second * 10**9
    flagged = point % FLAGGED == 0
    quality = np.select([flagged & (second % 10 == 3), flagged & (second % 10 == 7)],
                        [Quality.BAD, Quality.UNCERTAIN], Quality.GOOD)
    value = np.where(quality == Quality.BAD, np.nan, np.random.default_rng(1).random(k * SECONDS))
    batch = Batch.of(source_ts=ts, point=point, value=value, quality=quality,
                     cause=np.where(quality == Quality.GOOD, 0, 1), server_ts=ts, gateway_ts=ts)
    spool = Spool(tmp / "spool", SpoolSection(), SpoolStatus())
    sink = InfluxSink(local, spool, SinkStatus("influxdb"))
    sink.store([(1, batch)])
    sink.close()
    store = AlarmStore(store_path(tmp / "data"))
    for event, at in ALARMS:
        store.apply([event], now_ns=T0 + at * 10**9)
    store.ack(ALARMS[0][0].alarm.id, "operator", now_ns=T0 + 15 * 10**9)
    writer = AlarmWriter(local, store, SinkStatus(AlarmWriter.name))
    while writer.step():
        pass
    writer.close()
    store.close()
    yield server
    server.stop()


def test_compose_file_parses_with_every_service_and_volume() -> None:
    compose("-q")
    assert set(compose("--services").split()) == {
        "influxdb", "grafana", "sim-water", "sim-grid", "gateway", "api"}
    assert set(compose("--volumes").split()) == {
        "data", "influxdb-data", "influxdb-config", "grafana-data"}
    # Bind mounts name files of this repository: a typo would mount an empty directory.
    for source in re.findall(r"\./(deploy[^:\s\"]*):", COMPOSE.read_text()):
        assert (ROOT / source).exists(), source


def test_compose_site_file_passes_check_config_and_matches_influxdb_setup(site: Site) -> None:
    assert cli_main(["check-config", "--config", str(DEPLOY / "site.toml")]) == 0
    text = COMPOSE.read_text()
    h = site.historian
    assert (h.kind, h.api, h.url) == ("influxdb", "v2", "http://influxdb:8086")
    assert f"DOCKER_INFLUXDB_INIT_BUCKET: {h.bucket}\n" in text
    assert f"DOCKER_INFLUXDB_INIT_ORG: {h.org}\n" in text
    assert f"{h.token_env}: ${{INFLUX_TOKEN" in text
    # The API reads with InfluxQL from the database named like the bucket: the init script
    # maps exactly that.
    assert '--db "$DOCKER_INFLUXDB_INIT_BUCKET"' in (DEPLOY / "influxdb/dbrp.sh").read_text()


def test_dashboard_uses_the_provisioned_datasource_and_defines_its_variables(
        dashboard: dict, site: Site) -> None:
    provisioned = DATASOURCE.read_text()
    (uid,) = re.findall(r"^\s+uid: (\S+)$", provisioned, re.M)
    assert re.search(rf"^\s+dbName: {site.historian.bucket}$", provisioned, re.M)
    assert "version: InfluxQL" in provisioned
    used = [p["datasource"]["uid"] for p in dashboard["panels"] if "datasource" in p]
    used += [t["datasource"]["uid"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used += [v["datasource"]["uid"] for v in dashboard["templating"]["list"]]
    used += [a["datasource"]["uid"] for a in dashboard["annotations"]["list"]]
    assert used and set(used) == {uid}
    assert {title for title, _ in targets(dashboard)} == set(PANELS) | set(NOT_GOOD)
    defined = {v["name"] for v in dashboard["templating"]["list"]}
    assert defined == {"zone", "feeder"}
    repeats = {p["repeat"] for p in dashboard["panels"] if p["type"] == "row"}
    assert repeats == defined
    for title, query in targets(dashboard):
        assert set(re.findall(r"\$(\w+)", expand(query))) <= defined, title


@pytest.mark.parametrize("measurements, keys", [(KINDS, TAG_KEYS | FIELDS),
                                                (("alarms",), ALARM_KEYS)])
def test_every_query_names_only_keys_of_the_schema(
        dashboard: dict, measurements: tuple[str, ...], keys: set[str]) -> None:
    queries = [q for _, q in targets(dashboard)] + [
        v["query"] for v in dashboard["templating"]["list"]] + [
        a["query"] for a in dashboard["annotations"]["list"]]
    mine = [q for q in queries if any(f'FROM "{m}"' in q for m in measurements)
            or (READINGS in q and measurements == KINDS)]
    assert mine
    for q in mine:
        assert set(re.findall(r'"(\w+)"', q)) - set(measurements) <= keys, q


@pytest.mark.parametrize("variable, values", [("zone", ["dma1", "dma2", "dma3"]),
                                              ("feeder", ["feeder1", "feeder2"])])
def test_template_variables_list_the_sites_zones(
        dashboard: dict, influx: Influxd, variable: str, values: list[str]) -> None:
    (v,) = [v for v in dashboard["templating"]["list"] if v["name"] == variable]
    (series,) = influx.query(v["query"], db="scada")
    assert [value for _, value in series["values"]] == values


@pytest.mark.parametrize("title", PANELS)
def test_panel_query_returns_its_points_for_every_zone(
        dashboard: dict, influx: Influxd, site: Site, title: str) -> None:
    (query,) = [q for t, q in targets(dashboard) if t == title]
    variable = "zone" if "$zone" in title else "feeder"
    kind, unit = PANELS[title]
    zones = sorted({p.zone for p in site.points if p.zone
                    and p.zone.startswith("dma" if variable == "zone" else "feeder")})
    shown = 0
    for zone in zones:
        series = influx.query(expand(query, **{variable: zone}), db="scada")
        expected = {p.tag for p in site.points if p.zone == zone and p.kind == kind
                    and unit in (None, p.unit)}
        assert {s["tags"]["tag"] for s in series} == expected, zone
        for s in series:  # one mean per 10 s bucket of the minute written
            assert sum(v[1] is not None for v in s["values"]) == SECONDS // 10
        shown += len(series)
    assert shown


@pytest.mark.parametrize("title", NOT_GOOD)
def test_not_good_panel_counts_the_uncertain_and_bad_readings_of_each_tag(
        dashboard: dict, influx: Influxd, site: Site, title: str) -> None:
    (query,) = [q for t, q in targets(dashboard) if t == title]
    variable = "zone" if "$zone" in title else "feeder"
    zones = sorted({p.zone for p in site.points if p.zone
                    and p.zone.startswith("dma" if variable == "zone" else "feeder")})
    shown = 0
    for zone in zones:
        series = influx.query(expand(query, **{variable: zone}), db="scada")
        expected = {p.tag for i, p in enumerate(site.points)
                    if p.zone == zone and i % FLAGGED == 0}
        assert {s["tags"]["tag"] for s in series} == expected, zone
        for s in series:  # two per 10 s bucket: one bad, one uncertain
            assert [v[1] for v in s["values"]] == [2] * (SECONDS // 10)
        shown += len(series)
    assert shown


def test_alarm_annotations_show_each_raise_with_its_message_kind_and_priority(
        dashboard: dict, influx: Influxd) -> None:
    (annotation,) = dashboard["annotations"]["list"]
    (series,) = influx.query(expand(annotation["query"]), db="scada")
    rows = [dict(zip(series["columns"], v, strict=True)) for v in series["values"]]
    raises = [e.alarm for e, _ in ALARMS if e.action == "raise"]
    assert [r[annotation["textColumn"]] for r in rows] == [a.message for a in raises]
    tags = annotation["tagsColumn"].split(",")
    assert tags == ["kind", "priority"]
    assert [[r[t] for t in tags] for r in rows] == [[a.kind, a.priority] for a in raises]


def test_systemd_unit_runs_the_gateway_as_its_own_user_with_its_data_dir() -> None:
    unit = configparser.ConfigParser(interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    unit.read(UNIT)
    service = unit["Service"]
    assert re.fullmatch(r"/\S+/scadawatch run --config /etc/scadawatch/\S+\.toml",
                        service["ExecStart"])
    assert service["User"] not in ("", "root")
    assert service["Restart"] in ("on-failure", "always")
    assert service["RestartPreventExitStatus"] == "2"  # a config error: restarting won't fix
    assert int(service["LimitNOFILE"]) >= 4096  # room for the API's connections and the sinks
    data_dir = f"/var/lib/{service['StateDirectory']}"
    assert service["WorkingDirectory"] == service["ReadWritePaths"] == data_dir
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_image_copies_every_package_it_installs() -> None:
    """`pip install .` in the image finds only the packages copied in before it."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]
                ["include"]}
    copied = set(re.findall(r"^COPY (\w+) \./\1$", (ROOT / "Dockerfile").read_text(), re.M))
    assert copied == packages
