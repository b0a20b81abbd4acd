"""The octets of IEC 60870-5-104 a controlled station (an RTU) sends and reads: APCI frames,
monitoring-direction ASDUs of the types the simulators serve, CP56Time2a time tags, and the
command ASDUs a controlling station sends.

Written for the simulators, which stand alone (they import nothing of the gateway): the
gateway's client (gateway/inputs/iec104) decodes these octets with its own code, and the tests
read one with the other; the client is also tested against c104, a stack neither was written
beside.

>>> control(i_frame(3, 5, b"")[2:6])
('I', 3, 5)
>>> control(u_frame(STARTDT_ACT)[2:6])
('U', 4, 0)
>>> cp56(datetime(2026, 3, 1, 6, 0, 12, 345000, tzinfo=UTC)).hex()
'3930000601031a'
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import numpy as np

START = 0x68
HEADER = 6  # start byte, length octet, four control octets
MAX_LENGTH = 253  # the length octet: control octets and ASDU
SEQ_MOD = 1 << 15
ASDU_HEADER = 6  # type id, VSQ, COT, originator address, common address (2)
MAX_ASDU = MAX_LENGTH - 4
IOA_SIZE = 3
CP56_SIZE = 7

# U-format function bits (first control octet, with the low bits 0b11)
STARTDT_ACT, STARTDT_CON = 0x04, 0x08
STOPDT_ACT, STOPDT_CON = 0x10, 0x20
TESTFR_ACT, TESTFR_CON = 0x40, 0x80

# Type ids served, and the commands answered
M_SP_NA_1, M_DP_NA_1, M_ME_NC_1 = 1, 3, 13
M_SP_TB_1, M_DP_TB_1, M_ME_TF_1 = 30, 31, 36
TIMED = {M_SP_NA_1: M_SP_TB_1, M_DP_NA_1: M_DP_TB_1, M_ME_NC_1: M_ME_TF_1}
TYPE_NAMES = {M_SP_NA_1: "M_SP_NA_1", M_DP_NA_1: "M_DP_NA_1", M_ME_NC_1: "M_ME_NC_1"}
C_IC_NA_1, C_CI_NA_1 = 100, 101
QOI_STATION = 20
BROADCAST = 0xFFFF  # common address of a command meant for every station

# Causes of transmission (IEC 60870-5-101, 7.2.3)
COT_SPONTANEOUS, COT_ACT, COT_ACTCON, COT_DEACT, COT_DEACTCON, COT_ACTTERM = 3, 6, 7, 8, 9, 10
COT_INROGEN = 20
COT_UNKNOWN_TYPE, COT_UNKNOWN_COT, COT_UNKNOWN_CA = 44, 45, 46
PN = 0x40  # negative confirmation

# Quality descriptor bits (SIQ, DIQ, QDS)
IV, NT = 0x80, 0x40

DPI_OFF, DPI_ON = 1, 2

Format = Literal["I", "S", "U"]


def u_frame(function: int) -> bytes:
    return bytes((START, 4, function | 0x03, 0, 0, 0))


def s_frame(receive_seq: int) -> bytes:
    nr = receive_seq << 1
    return bytes((START, 4, 0x01, 0, nr & 0xFF, nr >> 8))


def i_frame(send_seq: int, receive_seq: int, asdu: bytes) -> bytes:
    ns, nr = send_seq << 1, receive_seq << 1
    return bytes((START, 4 + len(asdu), ns & 0xFF, ns >> 8, nr & 0xFF, nr >> 8)) + asdu


def control(c: bytes | memoryview) -> tuple[Format, int, int]:
    """("I", N(S), N(R)), ("S", 0, N(R)) or ("U", function bits, 0) of four control octets."""
    if not c[0] & 0x01:
        return "I", (c[0] | c[1] << 8) >> 1, (c[2] | c[3] << 8) >> 1
    if not c[0] & 0x02:
        return "S", 0, (c[2] | c[3] << 8) >> 1
    return "U", c[0] & 0xFC, 0


def cp56(moment: datetime) -> bytes:
    """CP56Time2a of `moment` in UTC (SU clear, day of week not given)."""
    t = moment.astimezone(UTC)
    return struct.pack("<HBBBBB", t.second * 1000 + t.microsecond // 1000, t.minute, t.hour,
                       t.day, t.month, t.year - 2000)


def elements(type_id: int, values: np.ndarray, quality: np.ndarray) -> np.ndarray:
    """(n, size) uint8 information elements of an untimed `type_id` for `values` and their
    quality bits. Single point: value != 0 is on; double point: on (DPI 2) or off (DPI 1)."""
    q = quality.astype(np.uint8)
    if type_id == M_SP_NA_1:
        return ((values != 0).astype(np.uint8) | q)[:, None]
    if type_id == M_DP_NA_1:
        return (np.where(values != 0, DPI_ON, DPI_OFF).astype(np.uint8) | q)[:, None]
    out = np.empty((len(values), 5), np.uint8)
    out[:, :4] = values.astype("<f4").view(np.uint8).reshape(-1, 4)
    out[:, 4] = q
    return out


def asdus(type_id: int, cot: int, common_address: int, ioa: np.ndarray, element: np.ndarray,
          time_tag: bytes | None = None) -> list[bytes]:
    """ASDUs (SQ=0) carrying one information object per row of `element` at `ioa`, each
    followed by `time_tag` when given (then `type_id` is the timed type), as many to an ASDU
    as fit in one APDU."""
    n = len(ioa)
    records = [ioa.astype("<u4").view(np.uint8).reshape(-1, 4)[:, :IOA_SIZE], element]
    if time_tag is not None:
        records.append(np.tile(np.frombuffer(time_tag, np.uint8), (n, 1)))
    table = np.hstack(records)
    per_asdu = min((MAX_ASDU - ASDU_HEADER) // table.shape[1], 0x7F)
    return [struct.pack("<BBBBH", type_id, len(chunk), cot, 0, common_address)
            + chunk.tobytes() for chunk in (table[i:i + per_asdu]
                                            for i in range(0, n, per_asdu))]


@dataclass(frozen=True, slots=True)
class Command:
    """A command ASDU's header and its first object's IOA and qualifier (None if it has
    no object)."""

    type_id: int
    cot: int  # without the P/N and test bits
    common_address: int
    qualifier: int | None


def command(asdu: bytes | memoryview) -> Command | None:
    """The command in `asdu`, None if it is shorter than its header."""
    if len(asdu) < ASDU_HEADER:
        return None
    qualifier = asdu[ASDU_HEADER + IOA_SIZE] if len(asdu) > ASDU_HEADER + IOA_SIZE else None
    return Command(asdu[0], asdu[2] & 0x3F, asdu[4] | asdu[5] << 8, qualifier)


def mirror(asdu: bytes | memoryview, cot: int, common_address: int | None = None,
           negative: bool = False) -> bytes:
    """A command ASDU sent back with cause `cot` (and P/N), as a station confirms,
    terminates or refuses it; `common_address`: the station's, for a broadcast."""
    out = bytearray(asdu)
    out[2] = cot | (PN if negative else 0)
    if common_address is not None:
        out[4:6] = common_address.to_bytes(2, "little")
    return bytes(out)
