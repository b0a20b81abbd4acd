"""A simulated site's OPC UA face: one asyncua server, one Double variable per signal.

Address space (namespace URI `urn:scadawatch:sim:<site>`, index `ns` on this server):

    Objects/<site>                    folder, node id  ns=<ns>;s=<site>
    Objects/<site>/<zone>             folder per zone, ns=<ns>;s=<site>/<zone> (signals of no
                                      zone in "plant", as their Modbus device)
    Objects/<site>/<zone>/<tag>       variable,        ns=<ns>;s=<tag>

so a client names a signal `nsu=urn:scadawatch:sim:<site>;s=<tag>` whatever index the server
gave the namespace. The endpoint is `opc.tcp://<host>:<port>/scadawatch/<site>`, security None
by default. Given a `pki_dir`, it also offers Basic256Sha256 Sign and SignAndEncrypt with a
server certificate created once in `<pki_dir>/own/` (cert.der, key.pem); a client certificate
is accepted when its exact copy is in `<pki_dir>/trusted/` (an unknown one is saved to
`<pki_dir>/rejected/` and refused, as real servers do), or any with `trust_all_clients` (demo).
Each variable has its unit as the `EngineeringUnits` property (EUInformation, display name only)
and the signal's description.

Every publish writes value, status and source timestamp (the simulated time of the sample)
together; the server timestamp is the wall-clock time of the write. Status codes:

- Good: a reading.
- BadCommunicationError: the signal's Modbus device is in comms state silent or exception.
- BadSensorFailure: dropout, the sensor gives no reading (NaN) while its device answers; kept
  apart from the comms code so a client can tell a dead sensor from a dead link.
- BadWaitingForInitialData: before the first publish.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import socket
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from asyncua import Node, Server, ua
from asyncua.common.utils import ServiceError
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from simulators.signals import Signal

COMMS_FAULT = ua.StatusCodes.BadCommunicationError
DROPOUT = ua.StatusCodes.BadSensorFailure
WRITES_PER_YIELD = 64  # let the server publish to subscribers between batches of writes
SECURE_POLICIES = [ua.SecurityPolicyType.NoSecurity, ua.SecurityPolicyType.Basic256Sha256_Sign,
                   ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt]

log = logging.getLogger(__name__)


def namespace_uri(site: str) -> str:
    return f"urn:scadawatch:sim:{site}"


class OpcUaSiteServer:
    """asyncua server of one site's signals, updated a whole sample at a time."""

    def __init__(self, site: str, signals: Sequence[Signal], *, host: str = "127.0.0.1",
                 port: int = 4840, pki_dir: Path | None = None,
                 trust_all_clients: bool = False) -> None:
        self.site = site
        self.pki_dir = pki_dir
        self.trust_all_clients = trust_all_clients
        self.signals = list(signals)
        self.host = host
        self._port = port
        self._server = Server()
        self._nodes: list[ua.NodeId] = []
        self._good = ua.StatusCode(ua.StatusCodes.Good)
        self._comms = ua.StatusCode(COMMS_FAULT)
        self._dropout = ua.StatusCode(DROPOUT)
        self.namespace_index = 0

    @property
    def endpoint(self) -> str:
        """The URL clients connect to, with the port the OS picked when asked for port 0."""
        bserver = self._server.bserver
        port = bserver.port if bserver is not None else self._port
        return f"opc.tcp://{self.host}:{port}/scadawatch/{self.site}"

    async def start(self) -> None:
        server = self._server
        await server.init()
        server.set_endpoint(f"opc.tcp://{self.host}:{self._port}/scadawatch/{self.site}")
        server.set_server_name(f"scadawatch simulated {self.site} site")
        if self.pki_dir is None:
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        else:
            await self._setup_security(self.pki_dir)
        ns = self.namespace_index = await server.register_namespace(namespace_uri(self.site))
        site_folder = await server.nodes.objects.add_folder(ua.NodeId(self.site, ns), self.site)
        zones: dict[str, Node] = {}
        waiting = ua.DataValue(ua.Variant(None, ua.VariantType.Null),
                               StatusCode=ua.StatusCode(ua.StatusCodes.BadWaitingForInitialData))
        for sig in self.signals:
            zone = sig.zone or "plant"
            if zone not in zones:
                zones[zone] = await site_folder.add_folder(
                    ua.NodeId(f"{self.site}/{zone}", ns), zone)
            node_id = ua.NodeId(sig.tag, ns)
            var = await zones[zone].add_variable(node_id, sig.tag, 0.0, ua.VariantType.Double)
            if sig.description:
                await var.write_attribute(ua.AttributeIds.Description, ua.DataValue(
                    ua.Variant(ua.LocalizedText(sig.description), ua.VariantType.LocalizedText)))
            await var.add_property(ns, "EngineeringUnits", ua.EUInformation(
                NamespaceUri="", UnitId=-1, DisplayName=ua.LocalizedText(sig.unit),
                Description=ua.LocalizedText(sig.unit)))
            await server.write_attribute_value(node_id, waiting)
            self._nodes.append(node_id)
        await server.start()

    @property
    def certificate(self) -> Path | None:
        """The server certificate (DER) a client must trust, when security is on."""
        return None if self.pki_dir is None else self.pki_dir / "own" / "cert.der"

    async def _setup_security(self, pki: Path) -> None:
        for folder in ("own", "trusted", "rejected"):
            (pki / folder).mkdir(parents=True, exist_ok=True)
        uri = f"urn:scadawatch:sim:{self.site}:server"
        await self._server.set_application_uri(uri)
        # asyncua's helper wants Path arguments and creates the pair only when missing/invalid
        await setup_self_signed_certificate(
            pki / "own" / "key.pem", pki / "own" / "cert.der", uri, socket.gethostname(),
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
            {"organizationName": "scadawatch simulator"})
        await self._server.load_certificate(pki / "own" / "cert.der")
        await self._server.load_private_key(pki / "own" / "key.pem")
        self._server.set_security_policy(SECURE_POLICIES)
        if self.trust_all_clients:
            log.warning("event=opcua_trust_all_clients site=%s reason=demo: any client "
                        "certificate is accepted", self.site)
        else:
            self._server.set_certificate_validator(
                lambda cert, _app: self._check_client(pki, cert))

    async def _check_client(self, pki: Path, cert: x509.Certificate) -> None:
        der = cert.public_bytes(Encoding.DER)
        for path in (pki / "trusted").glob("*"):
            data = path.read_bytes()
            if data == der or (b"-----BEGIN" in data
                               and x509.load_pem_x509_certificate(data) == cert):
                return
        saved = pki / "rejected" / f"{hashlib.sha1(der).hexdigest()}.der"  # a thumbprint
        saved.write_bytes(der)
        log.warning("event=opcua_client_rejected site=%s subject=%s saved=%s", self.site,
                    cert.subject.rfc4514_string(), saved)
        raise ServiceError(ua.StatusCodes.BadCertificateUntrusted)

    async def stop(self) -> None:
        await self._server.stop()

    async def publish(self, values: np.ndarray, comms_fault: np.ndarray,
                      source_time: datetime) -> None:
        """Write one sample: `values` and `comms_fault` (bool) hold one entry per signal."""
        now = datetime.now(UTC)
        dropout = np.isnan(values) & ~comms_fault
        write = self._server.write_attribute_value
        for i, (node, value, fault, missing) in enumerate(
                zip(self._nodes, values.tolist(), comms_fault.tolist(), dropout.tolist(),
                    strict=True)):
            status = self._comms if fault else self._dropout if missing else self._good
            await write(node, ua.DataValue(
                ua.Variant(value, ua.VariantType.Double), StatusCode=status,
                SourceTimestamp=source_time, ServerTimestamp=now))
            if i % WRITES_PER_YIELD == WRITES_PER_YIELD - 1:
                await asyncio.sleep(0)
