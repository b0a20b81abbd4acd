"""IEC 60870-5-104 peers on loopback: c104's server (lib60870-C, Fraunhofer FIT; GPLv3, a
test dependency only) as the station we did not write, and a raw-socket station of our own
that breaks the protocol on purpose (`HostileStation`)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import struct
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import c104
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.inputs.iec104 import apci

# c104's server checks its connections every tick: its shortest, 50 ms, keeps tests short.
TICK_MS = 50


@contextlib.contextmanager
def c104_station(port: int, common_address: int, points: dict[int, c104.Type],
                 tls: c104.TransportSecurity | None = None) -> Iterator[dict[int, c104.Point]]:
    """A started c104 server with one station and `points` (IOA -> type); yields the points."""
    server = c104.Server(ip="127.0.0.1", port=port, tick_rate_ms=TICK_MS,
                         transport_security=tls)
    station = server.add_station(common_address=common_address)
    made = {ioa: station.add_point(io_address=ioa, type=t) for ioa, t in points.items()}
    server.start()
    try:
        yield made
    finally:
        server.stop()


def certificate(folder: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / f"{name}-cert.pem", folder / f"{name}-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def asdu_frame(send_seq: int, type_id: int, objects: bytes, count: int, cot: int = 3,
               common_address: int = 1) -> bytes:
    """An I frame carrying one ASDU with `count` objects (SQ=0)."""
    asdu = struct.pack("<BBBBH", type_id, count, cot, 0, common_address) + objects
    return apci.i_frame(send_seq, 0, asdu)


def float_object(ioa: int, value: float, qds: int = 0) -> bytes:
    """An M_ME_NC_1 information object."""
    return ioa.to_bytes(3, "little") + struct.pack("<fB", value, qds)


# What a hostile station does once a client has sent STARTDT act and its first I frame:
# given the writer, it sends what it likes (or nothing).
Behaviour = Callable[[asyncio.StreamWriter], None]


class HostileStation:
    """A station on 127.0.0.1 that answers STARTDT (unless told not to), then `behaviour`;
    it acknowledges nothing, so a client's t1 runs out unless the behaviour ends the link
    first. Every connection gets the same treatment."""

    def __init__(self, behaviour: Behaviour, confirm_start: bool = True) -> None:
        self.behaviour = behaviour
        self.confirm_start = confirm_start
        self.connections = 0
        self.port = 0
        self.heard: list[tuple[str, int, int]] = []  # parse_control() of every frame received

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        started = False
        try:
            while True:
                head = await reader.readexactly(2)
                body = await reader.readexactly(head[1])
                kind, function, nr = apci.parse_control(body[:4])
                self.heard.append((kind, function, nr))
                if kind == "U" and function == apci.STARTDT_ACT_BIT and self.confirm_start:
                    writer.write(apci.u_frame(apci.STARTDT_CON_BIT))
                elif kind == "U" and function == apci.STOPDT_ACT_BIT:
                    writer.write(apci.u_frame(apci.STOPDT_CON_BIT))
                elif kind == "I" and not started:
                    started = True
                    self.behaviour(writer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[HostileStation]:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        async with server:
            yield self


def sends(*frames: bytes) -> Behaviour:
    def behaviour(writer: asyncio.StreamWriter) -> None:
        for frame in frames:
            writer.write(frame)
    return behaviour


def nothing(_: Any) -> None:
    """Never acknowledge, never answer."""
