"""The OPC UA driver against real asyncua servers on loopback: the project's simulated site,
and a small server of this file's own where a test needs control (status codes, namespaces,
restarts, operation limits)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest
from asyncua import ua
from support.harness import api_until
from support.peers.modbus_servers import Sink
from support.peers.opcua_servers import LIMIT, T0, TAGS, URI, UaServer, eventually, ns, ns_of

from anomaly.core.batch import Batch, Quality
from gateway.inputs.opcua.session import (
    COMMS,
    NO_SUBSCRIPTION,
    NODE_UNKNOWN,
    TYPE_MISMATCH,
    build_sessions,
)
from gateway.site.loader import ConfigError, load_site
from gateway.site.model import Device, Point, Site, SiteSection
from gateway.status import GatewayStatus
from scadawatch.ports import free_port
from simulators.servers.opcua_server import namespace_uri


def opcua_site(endpoint: str, nodes: dict[str, str], tmp_path: Path, **device: object) -> Site:
    settings = {"poll_interval": 0.05, "timeout": 0.5, **device}
    return Site(site=SiteSection(name="t", data_dir=tmp_path),
                devices=[Device(name="plc", protocol="opcua", endpoint=endpoint, **settings)],
                points=[Point(tag=tag, device="plc", node=node) for tag, node in nodes.items()])


def sessions(site: Site, sink: Sink) -> tuple[list, GatewayStatus]:
    status = GatewayStatus(site="t")
    return build_sessions(site, status, sink, data_dir=site.site.data_dir), status


def rows(sink: Sink) -> Batch:
    return Batch.concat(sink.batches)


def served_points(sink: Sink) -> set[int]:
    """Points with a reading the server sent (not one the gateway marked on losing it)."""
    batch = rows(sink) if sink.batches else None
    return set() if batch is None else set(batch.point[batch.cause != COMMS].tolist())


def latest_by_point(sink: Sink) -> dict[int, int]:
    """Point index -> row of its latest reading in `rows(sink)`."""
    return {int(p): r for r, p in enumerate(rows(sink).point)}


# --- values, status codes, timestamps --------------------------------------------------------

# tag, value written, status written, quality, cause, value stored
READINGS = [
    ("a", 1.5, ua.StatusCodes.Good, Quality.GOOD, 0, 1.5),
    ("b", 2.5, ua.StatusCodes.UncertainLastUsableValue, Quality.UNCERTAIN,
     ua.StatusCodes.UncertainLastUsableValue, 2.5),
    ("c", 3.5, ua.StatusCodes.BadSensorFailure, Quality.BAD, ua.StatusCodes.BadSensorFailure,
     math.nan),
    ("d", "text", ua.StatusCodes.Good, Quality.BAD, TYPE_MISMATCH, math.nan),
    ("e", True, ua.StatusCodes.Good, Quality.GOOD, 0, 1.0),
]


@pytest.mark.parametrize("mode", ["subscribe", "poll"])
def test_values_quality_raw_status_and_both_timestamps(mode: str, tmp_path: Path) -> None:
    source = T0 + timedelta(seconds=7)
    server_ts = datetime(2026, 3, 1, 6, 0, 9, 123456, tzinfo=UTC)

    async def scenario() -> Sink:
        async with UaServer() as served:
            for tag, value, status, *_ in READINGS:
                await served.write(tag, value, status, source=source, server=server_ts)
            site = opcua_site(served.endpoint, {t: ns_of(t) for t in TAGS}, tmp_path, mode=mode)
            sink = Sink()
            found, _ = sessions(site, sink)
            await sink.run(found, lambda s: len(latest_by_point(s)) == len(TAGS), LIMIT)
            return sink

    sink = asyncio.run(scenario())
    batch, last = rows(sink), latest_by_point(sink)
    for i, (tag, _, _, quality, cause, stored) in enumerate(READINGS):
        r = last[i]
        assert (batch.quality[r], batch.cause[r]) == (quality, cause), tag
        assert batch.value[r] == pytest.approx(stored, nan_ok=True), tag
        assert (batch.source_ts[r], batch.server_ts[r]) == (ns(source), ns(server_ts)), tag
        assert batch.gateway_ts[r] > ns(server_ts)


def test_simulated_site_by_namespace_uri(serve_site: Callable, tmp_path: Path) -> None:
    served = serve_site("water")
    tags = [s.tag for s in served.site.signals][:20]
    nodes = {t: f"nsu={namespace_uri('water')};s={t}" for t in tags}

    async def scenario() -> Sink:
        sink = Sink()
        found, _ = sessions(opcua_site(served.opcua_endpoint, nodes, tmp_path), sink)
        await sink.run(found, lambda s: len(latest_by_point(s)) == len(tags), LIMIT)
        return sink

    batch = rows(asyncio.run(scenario()))
    good = batch.quality == Quality.GOOD
    assert good.any() and np.isfinite(batch.value[good]).all()
    assert set(batch.source_ts[good].tolist()) == {ns(T0)}  # the frozen simulated time


def test_absolute_deadband_drops_small_changes(tmp_path: Path) -> None:
    steps = [0.5, 1.0, 5.0, 5.2, 10.0]

    async def scenario() -> dict[str, list[float]]:
        async with UaServer() as served:
            site = opcua_site(served.endpoint, {"a": ns_of("a"), "b": ns_of("b")}, tmp_path,
                              queue_size=10, publishing_interval=0.05)
            site = site.model_copy(update={"points": [
                site.points[0], dataclasses.replace(
                    site.points[1], deadband_type="absolute", deadband=1.0)]})
            sink = Sink()
            found, _ = sessions(site, sink)
            async with sink.running(found):
                await sink.wait(lambda s: len(latest_by_point(s)) == 2, LIMIT)
                for k, value in enumerate(steps, start=1):
                    for tag in ("a", "b"):
                        await served.write(tag, value, source=T0 + timedelta(seconds=k))
                    await asyncio.sleep(0.01)
                await sink.wait(lambda s: rows(s).value[-1] == 10.0
                                and len(set(rows(s).value[rows(s).point == 1])) > 1, LIMIT)
                await sink.wait(lambda s: (rows(s).value[rows(s).point == 0] == 10.0).any()
                                and (rows(s).value[rows(s).point == 1] == 10.0).any(), LIMIT)
        batch = rows(sink)
        return {tag: batch.value[batch.point == i].tolist() for i, tag in enumerate("ab")}

    got = asyncio.run(scenario())
    assert got["a"] == [0.0, *steps]
    assert got["b"] == [0.0, 5.0, 10.0]


# --- node ids ------------------------------------------------------------------------------

NODE_CASES = {
    "by_uri": (f"nsu={URI};s=a", Quality.GOOD, 0),
    "by_index_as_if_first_namespace": ("ns=2;s=b", Quality.BAD, NODE_UNKNOWN),
    "unknown_uri": ("nsu=urn:nobody;s=c", Quality.BAD, NODE_UNKNOWN),
    "unknown_node": (f"nsu={URI};s=missing", Quality.BAD, NODE_UNKNOWN),
    "numeric_standard_node": ("i=2259", Quality.GOOD, 0),  # Server_ServerStatus_State
}


@pytest.mark.parametrize("mode", ["subscribe", "poll"])
def test_namespace_uris_resolve_and_a_bad_node_fails_only_its_point(
        mode: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> tuple[Sink, int]:
        async with UaServer(extra=("urn:x:one", "urn:x:two")) as served:
            await served.write("a", 4.0)
            site = opcua_site(served.endpoint, {k: v[0] for k, v in NODE_CASES.items()},
                              tmp_path, mode=mode, poll_interval=0.2)
            sink = Sink()
            found, _ = sessions(site, sink)
            await sink.run(found, lambda s: len(latest_by_point(s)) == len(NODE_CASES), LIMIT)
            return sink, served.ns

    caplog.set_level(logging.WARNING, "gateway.inputs.opcua.session")
    sink, index = asyncio.run(scenario())
    assert index == 4
    batch, last = rows(sink), latest_by_point(sink)
    for i, (name, (node, quality, cause)) in enumerate(NODE_CASES.items()):
        assert (batch.quality[last[i]], batch.cause[last[i]]) == (quality, cause), name
        if quality == Quality.BAD:
            assert f"device=plc tag={name} node={node}" in caplog.text
    assert batch.value[last[0]] == 4.0


# --- recovery --------------------------------------------------------------------------------

@pytest.mark.slow
def test_server_restart_marks_the_outage_bad_and_duplicates_nothing(tmp_path: Path) -> None:
    async def scenario() -> tuple[Batch, GatewayStatus]:
        sink = Sink()
        first = await UaServer().__aenter__()
        site = opcua_site(first.endpoint, {t: ns_of(t) for t in TAGS[:3]}, tmp_path)
        found, status = sessions(site, sink)
        device = status.devices["plc"]
        async with sink.running(found):
            await sink.wait(lambda s: len(latest_by_point(s)) == 3, LIMIT)
            await first.write("a", 1.0, source=T0 + timedelta(seconds=1))
            await sink.wait(lambda s: 1.0 in rows(s).value, LIMIT)
            await first.__aexit__()
            await sink.wait(lambda s: (rows(s).cause == COMMS).sum() == 3, LIMIT)
            async with UaServer(port=first.port) as second:
                # The restarted server still holds the last sample: not stored again.
                await second.write("a", 1.0, source=T0 + timedelta(seconds=1))
                await eventually(lambda: device.state == "ok")
                await second.write("a", 2.0, source=T0 + timedelta(seconds=2))
                await sink.wait(lambda s: 2.0 in rows(s).value, LIMIT)
                return rows(sink), status  # before the end of the server is an outage too

    batch, status = asyncio.run(scenario())
    good = batch.quality == Quality.GOOD
    keys = list(zip(batch.point[good].tolist(), batch.source_ts[good].tolist(), strict=True))
    assert len(keys) == len(set(keys)), "a reading was stored twice"
    a = batch.point == 0
    assert batch.value[a & good].tolist() == [0.0, 1.0, 2.0]
    outage = batch.cause == COMMS
    assert outage.sum() == 3 and np.isnan(batch.value[outage]).all()
    assert status.devices["plc"].reconnects_total == 1


def test_a_subscription_the_server_drops_is_marked_and_made_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    grace = "gateway.inputs.opcua.session.PUBLISH_GRACE"
    monkeypatch.setattr(grace, 0.5)  # seconds, not the field's 30

    async def scenario() -> tuple[Batch, GatewayStatus]:
        async with UaServer() as served:
            site = opcua_site(served.endpoint, {"a": ns_of("a")}, tmp_path)
            sink = Sink()
            found, status = sessions(site, sink)
            async with sink.running(found):
                await sink.wait(lambda s: len(s.batches) == 1, LIMIT)
                # As a server does when its lifetime count runs out: publishing just stops.
                subscriptions = served.server.iserver.subscription_service
                await subscriptions.delete_subscriptions(list(subscriptions.subscriptions))
                await served.write("a", 1.0, source=T0 + timedelta(seconds=1))
                await sink.wait(lambda s: 1.0 in rows(s).value, LIMIT)
            return rows(sink), status

    batch, status = asyncio.run(scenario())
    # the initial value, the outage, then the value written meanwhile from the new session
    assert batch.cause.tolist() == [0, NO_SUBSCRIPTION, 0]
    assert batch.value[[0, 2]].tolist() == [0.0, 1.0]
    assert status.devices["plc"].reconnects_total == 1


def test_an_unreachable_server_is_marked_once_and_retried(tmp_path: Path) -> None:
    site = opcua_site(f"opc.tcp://127.0.0.1:{free_port()}/none", {"a": ns_of("a")}, tmp_path)

    async def scenario() -> tuple[Sink, GatewayStatus]:
        sink = Sink()
        found, status = sessions(site, sink)
        async with sink.running(found):
            await eventually(lambda: status.devices["plc"].poll_errors_total >= 3)
        return sink, status

    sink, status = asyncio.run(scenario())
    assert len(sink.batches) == 1 and rows(sink).cause.tolist() == [COMMS]
    assert status.devices["plc"].state == "down" and status.devices["plc"].poll_errors_total >= 3


@pytest.mark.parametrize(("settings", "reason"), [
    ({"security_policy": "Basic256Sha256", "security_mode": "SignAndEncrypt"},
     "server offers no endpoint with policy Basic256Sha256"),
    ({"username": "op", "password_env": "SCADAWATCH_TEST_UNSET"}, "SCADAWATCH_TEST_UNSET"),
])
def test_security_settings_the_server_refuses_name_the_device(
        settings: dict, reason: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> tuple[Sink, GatewayStatus]:
        async with UaServer() as served:
            site = opcua_site(served.endpoint, {"a": ns_of("a")}, tmp_path, **settings)
            sink = Sink()
            found, status = sessions(site, sink)
            await sink.run(found, lambda s: len(s.batches) == 1, LIMIT)
            return sink, status

    caplog.set_level(logging.WARNING, "gateway.inputs.opcua.session")
    sink, status = asyncio.run(scenario())
    batch = rows(sink)
    assert batch.quality.tolist() == [Quality.BAD] and batch.cause[0] >= 0x80000000
    assert status.devices["plc"].state == "down"
    assert "device=plc" in caplog.text and "device 'plc'" in caplog.text and reason in caplog.text


# --- operation limits ------------------------------------------------------------------------

# mode -> requests for 5 points with every limit at 2: 3 calls of create_monitored_items, or
# 3 of register_nodes and 3 of read for one poll.
@pytest.mark.parametrize(("mode", "requests"), [("subscribe", 3), ("poll", 6)])
def test_calls_split_to_the_servers_operation_limits(mode: str, requests: int,
                                                     tmp_path: Path) -> None:
    async def scenario() -> tuple[Sink, int]:
        async with UaServer(limit=2) as served:
            # A request timeout of 5 s, not 0.5: on a loaded machine a 0.5 s connect timed out,
            # the session marked every point bad (a stored row for each) and reconnected, so
            # the calls of two connects were counted. This test is about the split, not loss.
            site = opcua_site(served.endpoint, {t: ns_of(t) for t in TAGS}, tmp_path,
                              mode=mode, poll_interval=30.0, publishing_interval=0.05,
                              timeout=5.0)
            sink = Sink()
            found, status = sessions(site, sink)
            async with sink.running(found):
                # every tag served and the calls counted: an item's first value may come in
                # before the call that created it has returned and been counted
                await sink.wait(lambda s: served_points(s) == set(range(len(TAGS)))
                                and status.devices["plc"].requests_total >= requests, LIMIT)
                return sink, status.devices["plc"].requests_total

    sink, count = asyncio.run(scenario())
    assert count == requests
    assert served_points(sink) == set(range(len(TAGS)))


# --- site file -------------------------------------------------------------------------------

@pytest.mark.parametrize(("point", "reason"), [
    ('node = "nsu=urn:x;q=1"', "points[0].node: malformed node id"),
    ('node = "ns=2;s=a"\ndeadband = 0.5', "points[0].deadband: 0.5 has no effect with "
                                          "deadband_type 'none'"),
    ('node = "ns=2;s=a"\ndeadband_type = "percent"\ndeadband = 150.0',
     "points[0].deadband: a percent deadband must be at most 100"),
    ('node = "ns=2;s=a"\ndeadband_type = "relative"', "points[0].deadband_type: 'relative' is "
                                                      "not allowed"),
    ('node = "ns=2;s=a"\nqueue_size = 0', "points[0].queue_size: must be at least 1"),
])
def test_opcua_settings_are_checked(point: str, reason: str, tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text(f"""[site]\nname = "t"\n[[devices]]\nname = "plc"\nprotocol = "opcua"
endpoint = "opc.tcp://127.0.0.1:4840"\nmode = "subscribe"\n[[points]]\ntag = "x"
device = "plc"\n{point}\n""")
    with pytest.raises(ConfigError) as e:
        load_site(path)
    assert reason in str(e.value)


# --- end to end --------------------------------------------------------------------------------

def test_gateway_stores_subscribed_values_and_the_api_serves_them(serve_site: Callable,
                                                                   tmp_path: Path) -> None:
    served = serve_site("water")
    signals = served.site.signals[:10]
    site = Site(site=SiteSection(name="water", data_dir=tmp_path), devices=[
        Device(name="ua", protocol="opcua", endpoint=served.opcua_endpoint, poll_interval=0.1,
               timeout=0.5)], points=[
        Point(tag=s.tag, device="ua", unit=s.unit,
              node=f"nsu={namespace_uri('water')};s={s.tag}") for s in signals])
    async def all_values(http: httpx.AsyncClient) -> dict | None:
        latest = (await http.get("/api/v1/latest")).json()
        return latest if all(r["value"] is not None for r in latest["readings"]) else None

    latest = asyncio.run(api_until(site, all_values))
    got = {r["tag"]: r for r in latest["readings"]}
    assert set(got) == {s.tag for s in signals}
    for r in got.values():
        assert r["quality"] in ("good", "bad") and r["source_ts"].startswith("2026-03-01T06:00")
        assert r["server_ts"].endswith("Z") and r["stale"] is False



def test_polled_points_that_do_not_change_are_not_stale(tmp_path: Path) -> None:
    """A polled server answers every read with the same value and source time: the gateway
    stores it once (no duplicates), and the API still shows the points fresh, because each
    read confirms them."""
    async def scenario() -> dict:
        async with UaServer() as server:
            site = opcua_site(server.endpoint, {t: ns_of(t) for t in TAGS}, tmp_path,
                              mode="poll", poll_interval=0.1, stale_after=3)
            first: list[float] = []

            async def settled(http: httpx.AsyncClient) -> dict | None:
                latest = (await http.get("/api/v1/latest")).json()
                if any(r["gateway_ts"] is None for r in latest["readings"]):
                    return None
                first[:] = first or [time.monotonic()]
                # Well past the stale window (0.3 s) since the one stored reading of each.
                return latest if time.monotonic() - first[0] > 1.5 else None

            return await api_until(site, settled)

    latest = asyncio.run(scenario())
    assert {r["tag"]: r["stale"] for r in latest["readings"]} == dict.fromkeys(TAGS, False)
