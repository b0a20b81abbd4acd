"""DNP3 outstations on loopback: opendnp3 through `yadnp3` (Apache-2.0 bindings; a test
dependency only) as the outstation we did not write, and a raw-socket one of our own that
breaks the protocol on purpose (`HostileOutstation`).

opendnp3 keeps its defaults here: every point in class 1, static g1v1/g20v1/g30v1 and event
g2v1/g22v1/g32v1 (yadnp3 does not expose its per-point configuration), so the master asks
for the variations it wants by reading them."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

import opendnp3 as o
from dnp3.core.crc import append_crc
from dnp3.datalink.builder import build_unconfirmed_user_data
from dnp3.datalink.parser import FrameParser
from dnp3.transport.segmenter import segment_fragment

MASTER, OUTSTATION = 1, 10


class _Listener(o.IChannelListener):
    def OnStateChange(self, state: o.ChannelState) -> None:
        pass


class _Commands(o.ICommandHandler):
    def Begin(self) -> None:
        pass

    def End(self) -> None:
        pass


class _Application(o.IOutstationApplication):
    """Needs time until a master writes it; keeps what was written."""

    def __init__(self, need_time: bool) -> None:
        super().__init__()
        self.need_time = need_time
        self.written: list[int] = []  # ms since the epoch, as the master wrote them
        self.written_at: list[int] = []  # our clock then

    def SupportsWriteAbsoluteTime(self) -> bool:
        return True

    def WriteAbsoluteTime(self, timestamp: o.UTCTimestamp) -> bool:
        self.written.append(int(timestamp.msSinceEpoch))
        self.written_at.append(time.time_ns() // 1_000_000)
        self.need_time = False
        return True

    def GetApplicationIIN(self) -> o.ApplicationIIN:
        iin = o.ApplicationIIN()
        iin.needTime = self.need_time
        return iin


@dataclass
class Outstation:
    """A running opendnp3 outstation: `update()` its points, read what masters wrote."""

    outstation: o.IOutstation
    application: _Application

    def update(self, *changes: tuple[object, int], force: bool = False) -> None:
        """Apply (measurement, index) pairs at once: new static values and an event per
        change (per pair when `force`d)."""
        builder = o.UpdateBuilder()
        mode = o.EventMode.Force if force else o.EventMode.Detect
        for measurement, index in changes:
            builder.Update(measurement, index, mode)
        self.outstation.Apply(builder.Build())


@contextlib.contextmanager
def opendnp3_outstation(port: int, points: int = 10, *, need_time: bool = False,
                        unsolicited: bool = True, address: int = OUTSTATION,
                        master: int = MASTER) -> Iterator[Outstation]:
    """An enabled outstation with `points` points of every type, listening on 127.0.0.1."""
    manager = o.DNP3Manager(1)
    try:
        channel = manager.AddTCPServer("server", o.levels.NOTHING,
                                       o.ServerAcceptMode.CloseExisting,
                                       o.IPEndpoint("127.0.0.1", port), _Listener())
        config = o.OutstationStackConfig(o.DatabaseConfig(points))
        config.outstation.eventBufferConfig = o.EventBufferConfig.AllTypes(max(100, 2 * points))
        config.outstation.params.allowUnsolicited = unsolicited
        config.link.LocalAddr, config.link.RemoteAddr = address, master
        application = _Application(need_time)
        commands = _Commands()
        station = channel.AddOutstation("outstation", commands, application, config)
        station.Enable()
        yield Outstation(station, application)
    finally:
        manager.Shutdown()


def dnp_time(ms: int) -> o.DNPTime:
    return o.DNPTime(ms, o.TimestampQuality.SYNCHRONIZED)


# --- a hostile outstation --------------------------------------------------------------------

Behaviour = Callable[[int], list[bytes]]  # a READ's sequence number -> what to send back


def response(app: bytes, *, crc_ok: bool = True) -> bytes:
    """One application fragment as link frames from the outstation; the last octet (a data
    CRC) flipped when not `crc_ok`."""
    out = b"".join(build_unconfirmed_user_data(destination=MASTER, source=OUTSTATION,
                                               dir_from_master=False,
                                               user_data=s.to_bytes()).to_bytes()
                   for s in segment_fragment(app))
    return out if crc_ok else out[:-1] + bytes([out[-1] ^ 0xFF])


@dataclass
class HostileOutstation:
    """Answers each READ with what `behaviour` makes of its application sequence number."""

    behaviour: Behaviour
    port: int = 0
    connections: int = 0

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[HostileOutstation]:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        async with server:
            yield self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        parser = FrameParser()
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(4096):
                for frame in parser.feed(data):
                    app = frame.user_data[1:]  # after the transport header
                    if len(app) >= 2 and app[1] == 0x01:  # READ
                        writer.write(b"".join(self.behaviour(app[0] & 0x0F)))
                await writer.drain()
        writer.close()


def responds(*objects: bytes, iin: int = 0, crc_ok: bool = True) -> Behaviour:
    """One final response fragment carrying `objects` after the header."""
    return lambda seq: [response(bytes([0xC0 | seq, 0x81]) + iin.to_bytes(2, "little")
                                 + b"".join(objects), crc_ok=crc_ok)]


def short_length(seq: int) -> list[bytes]:
    """A link header whose CRC holds but whose LENGTH (3) is below the header's own 5."""
    return [append_crc(bytes([0x05, 0x64, 3, 0x44]) + MASTER.to_bytes(2, "little")
                       + OUTSTATION.to_bytes(2, "little"))]


def wrong_sequence(seq: int) -> list[bytes]:
    """A well-formed response to some other request."""
    return responds()((seq + 5) % 16)


def nothing(seq: int) -> list[bytes]:
    return []
