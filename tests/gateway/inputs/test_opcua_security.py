"""OPC UA security of the gateway's client (gateway/inputs/opcua/security.py) against a server we
did not write, node-opcua (tests/node_opcua/server.js, installed by tests/run.sh), and against the
simulator's secure mode: policies and modes, the trust lists on both sides, logins, and the
clear error naming the device for each way a secure connection is refused.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from asyncua import Client, ua
from cryptography.hazmat.primitives.serialization import Encoding
from support.peers.modbus_servers import Sink
from support.peers.node_peer import node_script

from anomaly.core.batch import Batch, Quality
from gateway.inputs.opcua.security import (
    OpcUaSecurityError,
    Pki,
    apply_security,
    client_certificate,
    load_certificate,
    thumbprint,
)
from gateway.inputs.opcua.session import build_sessions
from gateway.site.model import Device, Point, Site, SiteSection
from gateway.status import GatewayStatus
from scadawatch.ports import free_port
from simulators.servers.opcua_server import OpcUaSiteServer, namespace_uri
from simulators.signals import Signal

if TYPE_CHECKING:
    from conftest import CliRun

NODE_NS = "urn:scadawatch:test:node"
SITE = "secsite"
PASSWORD = "s3cret"  # the user manager's in server.js


@dataclass
class NodeServer:
    endpoint: str
    pki: Path  # node-opcua's: own/certs/certificate.pem, trusted/certs/, rejected/

    @property
    def certificate(self) -> Path:
        return self.pki / "own" / "certs" / "certificate.pem"


def trust_on_node(node: NodeServer, data_dir: Path) -> None:
    """What the server admin does with `scadawatch opcua cert`'s file: trust it on the server."""
    cert, _ = client_certificate(data_dir, SITE)
    target = node.pki / "trusted" / "certs"
    target.mkdir(parents=True, exist_ok=True)
    pem = load_certificate(cert).public_bytes(Encoding.PEM)
    (target / f"scadawatch-{data_dir.name}.pem").write_bytes(pem)


def trust_server(data_dir: Path, server_cert: Path) -> None:
    """What the engineer does with a server's certificate: put it in the gateway's trust list."""
    Pki.of(data_dir).trusted.mkdir(parents=True, exist_ok=True)
    shutil.copy(server_cert, Pki.of(data_dir).trusted / server_cert.name)


@pytest.fixture(scope="module")
def gateway_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gateway")


@pytest.fixture(scope="module")
def node_server(tmp_path_factory: pytest.TempPathFactory, gateway_dir: Path
                ) -> Iterator[NodeServer]:
    """node-opcua on a free port, trusting `gateway_dir`'s client certificate from the start
    (node-opcua reads its trust list on start; later additions take a moment to be seen)."""
    port = free_port()
    node = NodeServer(f"opc.tcp://127.0.0.1:{port}/node",
                      tmp_path_factory.mktemp("node") / "pki")
    trust_on_node(node, gateway_dir)
    with node_script("server.js", port, node.pki):
        trust_server(gateway_dir, node.certificate)
        yield node


def device(endpoint: str, policy: str = "None", mode: str = "None", **login: object
           ) -> Device:
    return Device(name="plc1", protocol="opcua", endpoint=endpoint, security_policy=policy,
                  security_mode=mode, timeout=5.0, **login)


async def read(dev: Device, data_dir: Path, namespace: str, names: list[str]
               ) -> tuple[ua.MessageSecurityMode, list[ua.DataValue]]:
    """Connect through `apply_security` (the driver's way) and read `names`' values."""
    client = Client(dev.endpoint or "", timeout=dev.timeout)
    await apply_security(client, dev, data_dir, SITE)
    await client.connect()
    try:
        ns = await client.get_namespace_index(namespace)
        nodes = [client.get_node(ua.NodeId(n, ns)) for n in names]
        values = await client.read_attributes(nodes, ua.AttributeIds.Value)
        return client.security_policy.Mode, values
    finally:
        await client.disconnect()


async def refused(dev: Device, data_dir: Path) -> OpcUaSecurityError:
    with pytest.raises(OpcUaSecurityError) as err:
        await read(dev, data_dir, NODE_NS, ["wave"])
    assert str(err.value).startswith("device 'plc1': ")
    return err.value


@pytest.mark.parametrize(("policy", "mode"), [
    ("None", "None"),
    ("Basic256Sha256", "Sign"),
    ("Basic256Sha256", "SignAndEncrypt"),
    ("Aes128_Sha256_RsaOaep", "SignAndEncrypt"),
])
def test_reads_node_opcua_in_each_security_mode(node_server: NodeServer, gateway_dir: Path,
                                                policy: str, mode: str) -> None:
    got_mode, (wave, pump_on, broken) = asyncio.run(read(
        device(node_server.endpoint, policy, mode), gateway_dir, NODE_NS,
        ["wave", "pump_on", "broken"]))
    assert got_mode == getattr(ua.MessageSecurityMode, "None_" if mode == "None" else mode)
    assert wave.StatusCode.is_good() and -1.0 <= wave.Value.Value <= 1.0
    assert pump_on.Value.Value is True
    assert broken.StatusCode.value == ua.StatusCodes.BadSensorFailure


def test_untrusted_server_is_rejected_until_trusted_both_ways(
        node_server: NodeServer, tmp_path: Path) -> None:
    """A new gateway: it rejects node-opcua's certificate and says which file to move where;
    then node-opcua refuses the gateway's certificate until its admin trusts it."""
    data_dir = tmp_path / "data"
    dev = device(node_server.endpoint, "Basic256Sha256", "SignAndEncrypt")
    pki = Pki.of(data_dir)

    err = asyncio.run(refused(dev, data_dir))
    saved = [*pki.rejected.glob("*.der")]
    server_cert = load_certificate(node_server.certificate)
    assert len(saved) == 1 and load_certificate(saved[0]) == server_cert
    assert err.code == ua.StatusCodes.BadCertificateUntrusted
    assert ("server certificate not trusted (CN=" in str(err)
            and thumbprint(server_cert) in str(err)
            and f"saved to {saved[0]} — move it to {pki.trusted}/ to trust it" in str(err))

    saved[0].rename(pki.trusted / saved[0].name)
    err = asyncio.run(refused(dev, data_dir))
    assert "refused the gateway's client certificate" in str(err)
    assert "scadawatch opcua cert" in str(err)
    ours = thumbprint(load_certificate(pki.cert))
    node_rejected = [p for p in (node_server.pki / "rejected").glob("*")
                     if ours in p.name.lower()]
    assert len(node_rejected) == 1, "node-opcua keeps a refused client certificate in rejected/"

    node_rejected[0].rename(node_server.pki / "trusted" / "certs" / node_rejected[0].name)
    # node-opcua notices a newly trusted certificate after a moment: retry, bounded
    for _ in range(20):
        try:
            _, (wave,) = asyncio.run(read(dev, data_dir, NODE_NS, ["wave"]))
            break
        except OpcUaSecurityError:
            time.sleep(0.25)
    else:
        pytest.fail("node-opcua still refuses the trusted client certificate after 5 s")
    assert wave.StatusCode.is_good()


@pytest.mark.parametrize(("login", "env", "expected"), [
    ({"username": "operator", "password_env": "SW_TEST_PW"}, None,
     "password_env: environment variable SW_TEST_PW is not set"),
    ({"username": "operator", "password_env": "SW_TEST_PW"}, "not-the-password",
     "login refused by the server (user access denied): check username and password"),
    ({"username": "nobody", "password_env": "SW_TEST_PW"}, PASSWORD,
     "login refused by the server (user access denied)"),
    ({"username": "operator", "password_file": "/nonexistent/ua-password"}, None,
     "password_file: cannot read /nonexistent/ua-password: No such file or directory"),
    ({"username": "operator"}, None, "username 'operator' needs password_env or password_file"),
], ids=["env-unset", "wrong-password", "unknown-user", "file-missing", "no-password-source"])
def test_bad_credentials_give_a_clear_error(
        node_server: NodeServer, gateway_dir: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture, login: dict[str, str], env: str | None,
        expected: str) -> None:
    if env is None:
        monkeypatch.delenv("SW_TEST_PW", raising=False)
    else:
        monkeypatch.setenv("SW_TEST_PW", env)
    caplog.set_level(logging.DEBUG)
    dev = device(node_server.endpoint, "Basic256Sha256", "SignAndEncrypt", **login)
    err = asyncio.run(refused(dev, gateway_dir))
    assert expected in str(err)
    if env is not None:
        assert env not in str(err) and env not in caplog.text  # a password is never shown


@pytest.mark.parametrize("password_source", ["env", "file"])
def test_right_password_logs_in(node_server: NodeServer, gateway_dir: Path, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
                                password_source: str) -> None:
    caplog.set_level(logging.DEBUG)
    if password_source == "env":
        monkeypatch.setenv("SW_TEST_PW", PASSWORD)
        login = {"password_env": "SW_TEST_PW"}
    else:
        (tmp_path / "pw").write_text(PASSWORD + "\n", encoding="utf-8")
        login = {"password_file": str(tmp_path / "pw")}
    dev = device(node_server.endpoint, "Basic256Sha256", "SignAndEncrypt",
                 username="operator", **login)
    _, (wave,) = asyncio.run(read(dev, gateway_dir, NODE_NS, ["wave"]))
    assert wave.StatusCode.is_good()
    assert PASSWORD not in caplog.text


@pytest.mark.parametrize(("policy", "mode", "expected"), [
    ("None", "Sign", "security_mode: mode 'Sign' does not go with policy 'None'"),
    ("Basic256Sha256", "None", "security_mode: mode 'None' does not go with policy"),
    ("Basic128Rsa15", "Sign", "security_policy: unknown policy 'Basic128Rsa15'"),
])
def test_wrong_security_settings_name_the_device(tmp_path: Path, policy: str, mode: str,
                                                 expected: str) -> None:
    # no server: the settings are refused before any connection
    dev = device("opc.tcp://127.0.0.1:9/none", policy, mode)
    with pytest.raises(OpcUaSecurityError, match=f"^device 'plc1': {expected}"):
        asyncio.run(apply_security(Client(dev.endpoint or ""), dev, tmp_path, SITE))


def test_server_without_the_policy_is_named(node_server: NodeServer, gateway_dir: Path) -> None:
    dev = device(node_server.endpoint, "Aes256_Sha256_RsaPss", "Sign")
    err = asyncio.run(refused(dev, gateway_dir))
    assert "server offers no endpoint with policy Aes256_Sha256_RsaPss and mode Sign" in str(err)


SIGNALS = [Signal(tag="tank1.level", kind="level", unit="m", description="tank level")]


async def read_simulator_as(pki: Path, trusted_client: Path, untrusted_client: Path
                            ) -> tuple[ua.DataValue, OpcUaSecurityError]:
    """One secure simulator; a gateway its admin trusted reads, another one is refused."""
    server = OpcUaSiteServer(SITE, SIGNALS, port=0, pki_dir=pki)
    await server.start()
    try:
        assert server.certificate is not None
        for data_dir in (trusted_client, untrusted_client):
            trust_server(data_dir, server.certificate)
        shutil.copy(client_certificate(trusted_client, SITE)[0], pki / "trusted" / "gw.der")
        dev = device(server.endpoint, "Basic256Sha256", "SignAndEncrypt")
        _, (value,) = await read(dev, trusted_client, namespace_uri(SITE), ["tank1.level"])
        with pytest.raises(OpcUaSecurityError) as err:
            await read(dev, untrusted_client, namespace_uri(SITE), ["tank1.level"])
        return value, err.value
    finally:
        await server.stop()


def test_simulator_secure_mode_serves_trusted_clients_only(tmp_path: Path) -> None:
    value, err = asyncio.run(read_simulator_as(tmp_path / "sim", tmp_path / "gw1",
                                               tmp_path / "gw2"))
    assert value.StatusCode.value == ua.StatusCodes.BadWaitingForInitialData  # not published yet
    assert "device 'plc1': the server refused the gateway's client certificate" in str(err)
    rejected = [*(tmp_path / "sim" / "rejected").glob("*.der")]
    gw2 = load_certificate(Pki.of(tmp_path / "gw2").cert)
    assert [load_certificate(p) for p in rejected] == [gw2]


def test_cert_command_creates_the_certificate_once(cli: CliRun, tmp_path: Path) -> None:
    runs = [cli("opcua", "cert", "--data-dir", tmp_path, "--site", "plant") for _ in range(2)]
    assert [code for code, _, _ in runs] == [0, 0]
    first, second = (out.splitlines() for _, out, _ in runs)
    assert "(created now)" in first[0] and "(existing)" in second[0]
    thumbs = [next(line for line in lines if line.startswith("SHA-1 thumbprint: "))
              for lines in (first, second)]
    assert thumbs[0] == thumbs[1]
    assert thumbs[0].split(": ")[1] == thumbprint(load_certificate(Pki.of(tmp_path).cert))
    out = runs[0][1]
    assert "application URI: urn:scadawatch:gateway:plant" in out
    assert f"{Pki.of(tmp_path).trusted}/" in out


@pytest.mark.parametrize(("policy", "mode"), [("None", "None"),
                                            ("Basic256Sha256", "SignAndEncrypt")])
def test_gateway_driver_subscribes_to_node_opcua(node_server: NodeServer, gateway_dir: Path,
                                                 policy: str, mode: str) -> None:
    tags = ["wave", "pump_on", "broken"]
    site = Site(
        site=SiteSection(name=SITE, data_dir=gateway_dir),
        devices=[Device(name="plc1", protocol="opcua", endpoint=node_server.endpoint,
                        security_policy=policy, security_mode=mode, poll_interval=0.1,
                        timeout=5.0)],
        points=[Point(tag=t, device="plc1", node=f"nsu={NODE_NS};s={t}") for t in tags])

    def changes_of_wave(sink: Sink) -> int:
        return sum(int(np.count_nonzero((b.point == 0) & (b.quality == Quality.GOOD)))
                   for b in sink.batches)

    async def scenario() -> tuple[Batch, GatewayStatus]:
        sink, status = Sink(), GatewayStatus(site=SITE)
        async with sink.running(build_sessions(site, status, sink, data_dir=gateway_dir)):
            await sink.wait(lambda s: changes_of_wave(s) >= 3, timeout=20.0)
        return Batch.concat(sink.batches), status

    batch, status = asyncio.run(scenario())
    last = {int(p): r for r, p in enumerate(batch.point)}
    assert batch.value[last[1]] == 1.0 and batch.quality[last[1]] == Quality.GOOD
    assert batch.quality[last[2]] == Quality.BAD
    assert batch.cause[last[2]] == ua.StatusCodes.BadSensorFailure
    assert status.devices["plc1"].state in ("ok", "degraded")


def test_percent_deadband_is_applied_by_a_server_that_implements_it(
        node_server: NodeServer, gateway_dir: Path) -> None:
    """node-opcua filters against the node's EURange (asyncua's server does not): the same
    node, read twice, once without a deadband and once with 5 % of its 0-100 range."""
    site = Site(
        site=SiteSection(name=SITE, data_dir=gateway_dir),
        devices=[Device(name="plc1", protocol="opcua", endpoint=node_server.endpoint,
                        poll_interval=0.5, sampling_interval=0.1, timeout=5.0)],
        points=[Point(tag="every", device="plc1", node=f"nsu={NODE_NS};s=level"),
                Point(tag="banded", device="plc1", node=f"nsu={NODE_NS};s=level",
                      deadband_type="percent", deadband=5.0)])

    def good(sink: Sink, point: int) -> int:
        return sum(int(np.count_nonzero((b.point == point) & (b.quality == Quality.GOOD)))
                   for b in sink.batches)

    async def scenario() -> tuple[int, int]:
        sink = Sink()
        status = GatewayStatus(site=SITE)
        async with sink.running(build_sessions(site, status, sink, data_dir=gateway_dir)):
            await sink.wait(lambda s: good(s, 0) >= 25, timeout=20.0)
        return good(sink, 0), good(sink, 1)

    every, banded = asyncio.run(scenario())
    # 25 changes of 0.1 each: 2.5 units, less than one 5-unit band (plus the first value).
    assert every >= 25 and banded <= 2


def test_an_item_the_server_will_not_monitor_is_polled_instead(
        node_server: NodeServer, gateway_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A percent deadband on a node without an engineering range: node-opcua refuses the
    filter, and the gateway reads that point by polling rather than losing it."""
    site = Site(
        site=SiteSection(name=SITE, data_dir=gateway_dir),
        devices=[Device(name="plc1", protocol="opcua", endpoint=node_server.endpoint,
                        poll_interval=0.2, timeout=5.0)],
        points=[Point(tag="wave", device="plc1", node=f"nsu={NODE_NS};s=wave",
                      deadband_type="percent", deadband=1.0),
                Point(tag="level", device="plc1", node=f"nsu={NODE_NS};s=level")])

    def good(sink: Sink, point: int) -> int:
        return sum(int(np.count_nonzero((b.point == point) & (b.quality == Quality.GOOD)))
                   for b in sink.batches)

    async def scenario() -> int:
        sink = Sink()
        status = GatewayStatus(site=SITE)
        async with sink.running(build_sessions(site, status, sink, data_dir=gateway_dir)):
            await sink.wait(lambda s: good(s, 0) >= 5 and good(s, 1) >= 5, timeout=20.0)
        return good(sink, 0)

    with caplog.at_level(logging.INFO, logger="gateway.inputs.opcua.session"):
        assert asyncio.run(scenario()) >= 5
    assert any("polled instead" in r.getMessage() and "wave" in r.getMessage()
               for r in caplog.records)


def test_a_password_allowed_in_clear_is_said_at_start(tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """check-config refuses a username over policy None (tests/cases/config/
    opcua-plaintext-password); where the site accepts it, every start says so."""
    from scadawatch.commands.serve import serve

    site = Site(site=SiteSection(name=SITE, data_dir=tmp_path), devices=[
        device("opc.tcp://127.0.0.1:9/none", "None", "None", username="operator",
               password_env="SW_TEST_PW", allow_plaintext_password=True)])
    caplog.set_level(logging.INFO)
    stop = asyncio.Event()
    stop.set()  # start, then stop at once
    asyncio.run(serve(site, gateway=True, api=False, stop=stop))
    (record,) = [r for r in caplog.records if "opcua_password_in_clear" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert record.getMessage().startswith("event=opcua_password_in_clear device=plc1 "
                                          "user=operator")
