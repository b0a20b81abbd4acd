"""The simulators' IEC 104 station (simulators/servers/iec104_server.py) at the link layer,
driven by a raw-socket controlling station: refusals of what a read-only station does not do, the k
window and t1 towards a client that never acknowledges, frames that break the protocol.
Frames are built with the gateway's codec (gateway/inputs/iec104), not the server's."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import numpy as np
import pytest

from gateway.inputs.iec104 import apci
from gateway.inputs.iec104 import asdu as codec
from simulators.servers.iec104_server import Iec104SiteServer, Timers
from simulators.signals import Signal

LIMIT = 5.0
CA = 1
# Enough measurands that an interrogation answer fills more than k I frames.
SIGNALS = [Signal(f"p{i}", "power", "MW", unit_id=CA) for i in range(500)]
FAST = Timers(t1=0.5, t2=0.2, t3=2.0)


class Station:
    """A connection to the server, as a controlling station without its manners."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.sent = 0

    async def frame(self) -> tuple[str, int, int, bytes]:
        head = await asyncio.wait_for(self.reader.readexactly(2), LIMIT)
        body = await asyncio.wait_for(self.reader.readexactly(head[1]), LIMIT)
        return (*apci.parse_control(body[:4]), body[4:])

    async def start(self) -> None:
        self.writer.write(apci.STARTDT_ACT)
        assert (await self.frame())[:2] == ("U", apci.STARTDT_CON_BIT)

    def command(self, asdu: bytes) -> None:
        self.writer.write(apci.i_frame(self.sent, 0, asdu))
        self.sent += 1


def against_station(scenario: Callable[[Station], Awaitable[None]]) -> None:
    """Run `scenario` on a connection to a station of `SIGNALS` (values 0, 1, 2, ...)."""

    async def main() -> None:
        server = Iec104SiteServer("grid", SIGNALS, port=0, timers=FAST)
        await server.start()
        server.publish(np.arange(len(SIGNALS), dtype=np.float64),
                       np.zeros(len(SIGNALS), bool), datetime.now(UTC))
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            await scenario(Station(reader, writer))
        finally:
            writer.close()
            await server.stop()

    asyncio.run(main())


C_SC_NA_1 = 45
REFUSALS = [
    # (what the client sends, the cause the station answers with, negative)
    (codec.command(codec.C_IC_NA_1, codec.COT_ACT, 99, codec.QOI_STATION), 46, True),
    (codec.command(C_SC_NA_1, codec.COT_ACT, CA, 0x01), 44, True),  # read-only: no commands
    (codec.command(codec.C_IC_NA_1, codec.COT_ACT, CA, 21), codec.COT_ACTCON, True),  # group 1
    (codec.command(codec.C_IC_NA_1, codec.COT_SPONTANEOUS, CA, 20), 45, True),
    (codec.command(codec.C_CI_NA_1, codec.COT_ACT, CA, 5), codec.COT_ACTCON, False),
]


@pytest.mark.parametrize(("sent", "cot", "negative"), REFUSALS,
                         ids=["unknown-ca", "control-command", "group-interrogation",
                              "wrong-cause", "counter-interrogation"])
def test_what_a_read_only_station_does_not_do_is_answered(
        sent: bytes, cot: int, negative: bool) -> None:
    async def scenario(station: Station) -> None:
        await station.start()
        station.command(sent)
        kind, _, _, asdu = await station.frame()
        h = codec.header(asdu)
        assert (kind, h.type_id, h.cot, h.negative) == ("I", sent[0], cot, negative)

    against_station(scenario)


def test_a_client_that_never_acknowledges_gets_k_frames_then_t1_closes() -> None:
    async def scenario(station: Station) -> None:
        await station.start()
        station.command(codec.command(codec.C_IC_NA_1, codec.COT_ACT, CA, codec.QOI_STATION))
        frames = []
        with pytest.raises(asyncio.IncompleteReadError):  # closed by the station
            while True:
                frames.append(await station.frame())
        # N(S) 0..k-1, then nothing more until t1 ends the connection
        assert [f[1] for f in frames] == list(range(FAST.k))

    against_station(scenario)


def test_an_acknowledging_client_gets_the_whole_interrogation() -> None:
    async def scenario(station: Station) -> None:
        await station.start()
        station.command(codec.command(codec.C_IC_NA_1, codec.COT_ACT, CA, codec.QOI_STATION))
        values: list[float] = []
        while True:
            kind, ns, _, asdu = await station.frame()
            assert kind == "I"
            station.writer.write(apci.s_frame(ns + 1))
            h = codec.header(asdu)
            if h.cot == codec.COT_ACTTERM:
                break
            if h.type_id == 13:  # M_ME_NC_1, interrogated
                values += [v for _, v, _ in struct.iter_unpack("<3sfB", asdu[6:])]
        assert values == list(range(len(SIGNALS)))

    against_station(scenario)


GI = codec.command(codec.C_IC_NA_1, codec.COT_ACT, CA, codec.QOI_STATION)


@pytest.mark.parametrize("garbage", [b"\x69\x04\x07\x00\x00\x00", b"\x68\x02\x07\x00",
                                     apci.i_frame(5, 0, GI), apci.s_frame(3)],
                         ids=["start-byte", "length", "sequence", "ack-of-unsent"])
def test_a_frame_that_breaks_the_protocol_closes_the_connection(garbage: bytes) -> None:
    async def scenario(station: Station) -> None:
        await station.start()
        station.writer.write(garbage)
        with pytest.raises(asyncio.IncompleteReadError):
            await station.frame()

    against_station(scenario)
