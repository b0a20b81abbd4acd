"""`scadawatch browse opcua` (scadawatch/commands/browse.py, gateway/inputs/opcua/browse.py) against
node-opcua (tests/node_opcua/tree.js, a server we did not write) with a deep folder tree of
thousands of variables and small operation limits: the point list covers every numeric
variable, check-config accepts it and the gateway serves every point live; refusals and silence
give clear errors."""

from __future__ import annotations

import asyncio
import csv
import doctest
import io
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from support.harness import api_until
from support.peers.node_peer import node_script

import gateway.inputs.opcua.browse
import scadawatch.commands.browse
from gateway.inputs.opcua.security import Pki, client_certificate, load_certificate
from gateway.site.loader import load_site
from scadawatch.commands.browse import guess_kind
from scadawatch.ports import free_port

if TYPE_CHECKING:
    from conftest import CliRun

AREAS = 3  # x 100 devices x 8 variables, + 1,200 in one folder: 3,600 variables
NS = "urn:scadawatch:test:tree"
NUMERIC = ("Pressure", "Flow", "Level", "Temperature", "Speed", "Running", "Starts")
# (name, kind, unit, lo, hi) of the variables of every device; SerialNumber is a string
EXPECTED = {"Pressure": ("pressure", "bar", "0.0", "16.0"),
            "Flow": ("flow", "m3/h", "0.0", "500.0"),
            "Level": ("level", "m", "0.0", "8.0"),
            "Temperature": ("temperature", "°C", "-20.0", "80.0"),
            "Speed": ("", "", "", ""), "Running": ("status", "", "", ""),
            "Starts": ("", "", "", "")}


def tree_nodes() -> dict[str, str]:
    """node id -> tag of every numeric variable tree.js serves."""
    out = {f"nsu={NS};s=Flat.{i}": f"Flat.Value_{i}" for i in range(1200)}
    for a in range(1, AREAS + 1):
        for ln in range(1, 6):
            for s in range(1, 6):
                for d in range(1, 5):
                    for name in NUMERIC:
                        out[f"nsu={NS};s=A{a}.L{ln}.S{s}.D{d}.{name}"] = (
                            f"Plant.Area{a}.Line{ln}.Station{s}.Device{d}.{name}")
    return out


@pytest.fixture(scope="module")
def gateway_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gateway")


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory, gateway_dir: Path) -> Iterator[str]:
    """tree.js, trusting the gateway's client certificate (as its admin would, told by
    `scadawatch opcua cert`) from the start."""
    port = free_port()
    pki = tmp_path_factory.mktemp("tree") / "pki"
    cert, _ = client_certificate(gateway_dir, "gateway")
    (pki / "trusted" / "certs").mkdir(parents=True)
    (pki / "trusted" / "certs" / "gateway.pem").write_bytes(
        load_certificate(cert).public_bytes(Encoding.PEM))
    with node_script("tree.js", port, pki, AREAS) as ready:
        assert ready[1] == str(len(tree_nodes()) + 100 * AREAS)  # + one string per device
        yield f"opc.tcp://127.0.0.1:{port}/tree"


@pytest.fixture(scope="module")
def browsed(tree: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The point list of the whole server, and what the command said on stderr."""
    from scadawatch.cli import main

    out = tmp_path_factory.mktemp("browse") / "points.csv"
    err = io.StringIO()  # not a terminal: progress comes as lines
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("sys.stderr", err)
        code = main(["browse", "opcua", "--endpoint", tree, "--device", "plc1", "--out",
                     str(out)])
    assert code == 0, err.getvalue()
    return out, err.getvalue()


def site_file(folder: Path, endpoint: str, csv_name: str = "points.csv") -> Path:
    path = folder / "site.toml"
    path.write_text(f'[site]\nname = "tree"\ndata_dir = "data"\npoints_csv = "{csv_name}"\n\n'
                    f'[[devices]]\nname = "plc1"\nprotocol = "opcua"\nendpoint = "{endpoint}"\n'
                    'timeout = 5.0\n', encoding="utf-8")
    return path


def test_point_list_covers_every_numeric_variable(browsed: tuple[Path, str]) -> None:
    out, err = browsed
    with out.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    expected = tree_nodes()
    assert {r["node"]: r["tag"] for r in rows} == expected  # each once, under its owner's path
    assert {r["device"] for r in rows} == {"plc1"}
    for r in rows:
        name = r["tag"].rpartition(".")[2]
        if not r["tag"].startswith("Flat."):
            assert (r["kind"], r["unit"], r["lo"], r["hi"]) == EXPECTED[name], r
    assert "left out (not a number, or an array): String 300" in err
    assert f"{len(expected)} points to {out}" in err
    assert "100 nodes per Browse, 250 per Read" in err  # the server's limits, kept


def test_check_config_accepts_the_point_list_and_the_gateway_serves_every_point(
        browsed: tuple[Path, str], tree: str, cli: CliRun) -> None:
    out, _ = browsed
    site_path = site_file(out.parent, tree)
    code, stdout, err = cli("check-config", "--config", site_path)
    assert code == 0, err
    assert f"points: {len(tree_nodes())} " in stdout

    async def all_live(http: httpx.AsyncClient) -> dict | None:
        latest = (await http.get("/api/v1/latest")).json()
        return latest if all(r["value"] is not None for r in latest["readings"]) else None

    latest = asyncio.run(api_until(load_site(site_path), all_live))
    assert {r["tag"] for r in latest["readings"]} == set(tree_nodes().values())
    assert {r["quality"] for r in latest["readings"]} == {"good"}


@pytest.fixture
def silent() -> Iterator[str]:
    """A TCP port that accepts connections and never says a word."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield f"opc.tcp://127.0.0.1:{server.getsockname()[1]}"


@pytest.mark.parametrize(("server", "args", "expected"), [
    ("tree", ["--username", "blind", "--password-env", "BLIND_PASSWORD",
              "--allow-plaintext-password"],
     "the server refused to browse i=85: BadUserAccessDenied (User does not have permission "
     "to perform the requested operation)"),
    ("tree", ["--root", f"nsu={NS};s=NoSuchFolder"],
     f"the server refused to browse nsu={NS};s=NoSuchFolder: BadNodeIdUnknown"),
    ("tree", ["--root", "nsu=urn:elsewhere;s=x"], "--root nsu=urn:elsewhere;s=x: the server has "
                                                  "no namespace 'urn:elsewhere'"),
    ("silent", ["--timeout", "1s"], ": no answer within 1 s"),
    ("closed", [], ": connection refused"),
])
def test_refusal_and_silence_are_named(request: pytest.FixtureRequest, cli: CliRun,
                                       tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       server: str, args: list[str], expected: str) -> None:
    monkeypatch.setenv("BLIND_PASSWORD", "blind")  # tree.js' user without Browse permission
    endpoint = (f"opc.tcp://127.0.0.1:{free_port()}" if server == "closed"
                else request.getfixturevalue(server))
    out = tmp_path / "points.csv"
    code, _, err = cli("browse", "opcua", "--endpoint", endpoint, "--out", out, *args)
    assert code == 1
    assert f"scadawatch browse opcua: error: {endpoint}" in err
    assert expected in err
    assert not out.exists()  # nothing half-written


def test_secure_browse_with_the_gateways_certificate_and_trust_list(
        tree: str, gateway_dir: Path, cli: CliRun, tmp_path: Path) -> None:
    """Basic256Sha256 SignAndEncrypt through the gateway's own PKI: refused until the engineer
    trusts the server's certificate (saved under pki/rejected/), then browsed."""
    args = ["browse", "opcua", "--endpoint", tree, "--security", "Basic256Sha256",
            "--data-dir", gateway_dir, "--root", f"nsu={NS};s=Favorites",
            "--out", tmp_path / "points.csv"]
    code, _, err = cli(*args)
    assert code == 1
    pki = Pki.of(gateway_dir)
    (rejected,) = pki.rejected.iterdir()
    assert "server certificate not trusted" in err and f"saved to {rejected}" in err
    rejected.rename(pki.trusted / rejected.name)

    code, _, err = cli(*args)
    assert code == 0, err
    with (tmp_path / "points.csv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["node"] for r in rows} == {f"nsu={NS};s=A{a}.L1.S1.D1.Flow"
                                         for a in range(1, AREAS + 1)}
    assert len({r["tag"] for r in rows}) == AREAS
    assert 'security_policy = "Basic256Sha256", security_mode = "SignAndEncrypt"' in err


def test_the_site_files_device_gives_endpoint_and_security(tree: str, cli: CliRun,
                                                            tmp_path: Path) -> None:
    site = site_file(tmp_path, tree)
    args = ["browse", "opcua", "--config", site, "--root", f"nsu={NS};s=Favorites"]
    code, out, err = cli(*args, "--device", "plc1")
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == AREAS and {r["device"] for r in rows} == {"plc1"}
    assert "[[devices]]" not in err  # it is in the site file already

    code, _, err = cli(*args, "--device", "plc9")
    assert code == 2
    assert "--device naming one of its OPC UA devices (plc1)" in err


@pytest.mark.parametrize(("path", "unit", "boolean", "kind"), [
    (["Zone1", "PT101"], "kPa", False, "pressure"),
    (["Zone1", "Inlet"], "m³/h", False, "flow"),  # as EUInformation writes it
    (["Zone1", "Inlet"], "L/s", False, "flow"),
    (["Feeder", "Ua"], "kV", False, "voltage"),
    (["Feeder", "Ia"], "A", False, "current"),
    (["Grid", "F"], "Hz", False, "frequency"),
    (["Feeder", "P"], "MW", False, "power"),
    (["Tank", "TT1"], "°C", False, "temperature"),
    (["Tank3", "Level"], "m", False, "level"),  # a length says nothing: the name does
    (["Station", "DischargeHead"], "m", False, "pressure"),
    (["TankLevel", "PV"], "%", False, "level"),  # the name of the owner, when the node's is bare
    (["Pump", "Speed"], "rpm", False, ""),  # blank where nothing says
    (["Pump", "Running"], "", True, "status"),
    (["Breaker", "State"], "", False, "status"),
])
def test_kind_from_unit_then_names(path: list[str], unit: str, boolean: bool,
                                   kind: str) -> None:
    assert guess_kind(path, unit, boolean) == kind


@pytest.mark.parametrize("module", [scadawatch.commands.browse, gateway.inputs.opcua.browse])
def test_docstring_examples(module: object) -> None:
    assert doctest.testmod(module).failed == 0  # type: ignore[arg-type]


def test_walk_within_few_continuation_points(tree: str, monkeypatch: pytest.MonkeyPatch
                                             ) -> None:
    """Three references per answer: ~300 nodes of a batch of 100 come back with a continuation
    point, more than the 5 the server holds per session, so it answers the rest
    BadNoContinuationPoints; they are browsed again, few at a time, and nothing is missed."""
    from asyncua import Client

    from gateway.inputs.opcua.browse import Walker, node_text, read_limits

    monkeypatch.setattr("gateway.inputs.opcua.browse.MAX_REFERENCES", 3)

    async def walk() -> tuple[set[str], int]:
        client = Client(tree, timeout=10)
        await client.connect()
        try:
            namespaces = await client.get_namespace_array()
            found = await Walker(client, await read_limits(client)).walk()
            return {node_text(v.node, namespaces) for v in found.variables}, sum(
                found.refused.values())
        finally:
            await client.disconnect()

    nodes, refused = asyncio.run(walk())
    assert refused == 0
    assert nodes == set(tree_nodes())
