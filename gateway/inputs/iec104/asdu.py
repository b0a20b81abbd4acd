"""ASDUs of IEC 60870-5-101/104 in the monitoring direction, decoded a column at a time.

An ASDU: type id, variable structure qualifier (SQ bit, object count), cause of transmission
(two octets in 104: cause with P/N and test bits, originator address), common address (two
octets), then its information objects: a 3-octet IOA and an element each (SQ=0), or one IOA
and consecutive elements (SQ=1). Every element of one type has one size, so the objects of
many ASDUs of a type are gathered as fixed-size records (IOA + element) and decoded together
with numpy (`decode`), not one Python object per reading.

Quality (`flags`): the raw quality bits as sent, in the low byte where the standard puts
them (IV 0x80, NT 0x40, SB 0x20, BL 0x10, OV 0x01); a counter's CY and CA (same bits as NT
and SB in its sequence octet) move to 0x100 and 0x200; a CP56Time2a tag marked invalid adds
0x400, one marked substituted 0x800. `gateway.inputs.quality` names them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np

IOA_SIZE = 3
HEADER = 6  # type id, VSQ, COT, originator, common address (2)
CP56_SIZE = 7

# Causes of transmission (IEC 60870-5-101, 7.2.3)
COT_PERIODIC, COT_BACKGROUND, COT_SPONTANEOUS, COT_INITIALIZED, COT_REQUEST = 1, 2, 3, 4, 5
COT_ACT, COT_ACTCON, COT_DEACT, COT_DEACTCON, COT_ACTTERM = 6, 7, 8, 9, 10
COT_INROGEN, COT_REQCOGEN = 20, 37
COT_UNKNOWN = {44: "unknown type id", 45: "unknown cause of transmission",
               46: "unknown common address", 47: "unknown information object address"}
PN_BIT, TEST_BIT = 0x40, 0x80

C_IC_NA_1, C_CI_NA_1, M_EI_NA_1 = 100, 101, 70
QOI_STATION = 20  # general interrogation
QCC_GENERAL = 5  # counter interrogation: all groups, read (no freeze, no reset)

# Quality bits (`flags`)
IV, NT, SB, BL, OV = 0x80, 0x40, 0x20, 0x10, 0x01
CY, CA, TIME_IV, TIME_SB = 0x100, 0x200, 0x400, 0x800
QDS_MASK = IV | NT | SB | BL | OV
SIQ_MASK = IV | NT | SB | BL


@dataclass(frozen=True, slots=True)
class Kind:
    """An information element type: its family (what a point's `typeid` names) and layout."""

    family: str  # the type without its time tag, e.g. "M_ME_NC_1"
    size: int  # octets of the element without a time tag
    timed: bool


FAMILIES = ("M_SP_NA_1", "M_DP_NA_1", "M_ST_NA_1", "M_BO_NA_1", "M_ME_NA_1", "M_ME_NB_1",
            "M_ME_NC_1", "M_IT_NA_1", "M_ME_ND_1")
# Type id -> kind, for the types this client decodes (104 carries no CP24Time2a types).
TYPES: dict[int, Kind] = {
    1: Kind("M_SP_NA_1", 1, False), 30: Kind("M_SP_NA_1", 1, True),
    3: Kind("M_DP_NA_1", 1, False), 31: Kind("M_DP_NA_1", 1, True),
    5: Kind("M_ST_NA_1", 2, False), 32: Kind("M_ST_NA_1", 2, True),
    7: Kind("M_BO_NA_1", 5, False), 33: Kind("M_BO_NA_1", 5, True),
    9: Kind("M_ME_NA_1", 3, False), 34: Kind("M_ME_NA_1", 3, True),
    11: Kind("M_ME_NB_1", 3, False), 35: Kind("M_ME_NB_1", 3, True),
    13: Kind("M_ME_NC_1", 5, False), 36: Kind("M_ME_NC_1", 5, True),
    15: Kind("M_IT_NA_1", 5, False), 37: Kind("M_IT_NA_1", 5, True),
    21: Kind("M_ME_ND_1", 2, False),
}



def record_size(kind: Kind) -> int:
    return IOA_SIZE + kind.size + (CP56_SIZE if kind.timed else 0)


@dataclass(frozen=True, slots=True)
class Header:
    type_id: int
    sq: bool
    count: int
    cot: int  # without the P/N and test bits
    negative: bool
    test: bool
    common_address: int


class AsduError(ValueError):
    """An ASDU that cannot be decoded; its message says why."""


def header(asdu: bytes | memoryview) -> Header:
    if len(asdu) < HEADER:
        raise AsduError(f"ASDU of {len(asdu)} octets, shorter than its 6-octet header")
    cot = asdu[2]
    return Header(type_id=asdu[0], sq=bool(asdu[1] & 0x80), count=asdu[1] & 0x7F,
                  cot=cot & 0x3F, negative=bool(cot & PN_BIT), test=bool(cot & TEST_BIT),
                  common_address=asdu[4] | asdu[5] << 8)


def records(h: Header, kind: Kind, asdu: bytes | memoryview) -> bytes:
    """The ASDU's information objects as fixed-size records (IOA + element), SQ=1 expanded."""
    size = record_size(kind)
    body = asdu[HEADER:]
    if not h.sq:
        if len(body) != h.count * size:
            raise AsduError(f"type {h.type_id}: {h.count} objects of {size} octets need "
                            f"{h.count * size}, the ASDU carries {len(body)}")
        return bytes(body)
    element = size - IOA_SIZE
    if len(body) != IOA_SIZE + h.count * element:
        raise AsduError(f"type {h.type_id} (SQ=1): {h.count} elements of {element} octets "
                        f"need {IOA_SIZE + h.count * element}, the ASDU carries {len(body)}")
    first = body[0] | body[1] << 8 | body[2] << 16
    ioa = np.arange(first, first + h.count, dtype=np.uint32).view(np.uint8).reshape(-1, 4)
    elements = np.frombuffer(body, np.uint8, offset=IOA_SIZE).reshape(h.count, element)
    return np.hstack([ioa[:, :IOA_SIZE], elements]).tobytes()


@dataclass(frozen=True, slots=True)
class Columns:
    ioa: np.ndarray  # uint32
    value: np.ndarray  # float64
    flags: np.ndarray  # uint32 quality bits (module docstring)
    time_ns: np.ndarray | None  # int64 device time (ns since the epoch, UTC), timed types only


def _le(m: np.ndarray, start: int, width: int, dtype: str) -> np.ndarray:
    return np.ascontiguousarray(m[:, start:start + width]).view(dtype)[:, 0]


def decode(kind: Kind, data: bytes, zone: ZoneInfo | None = None) -> Columns:
    """The values, quality flags and device times of records of `kind` (`records()`).
    `zone`: the device's clock's time zone (None: UTC)."""
    m = np.frombuffer(data, np.uint8).reshape(-1, record_size(kind))
    ioa = m[:, 0].astype(np.uint32) | m[:, 1].astype(np.uint32) << 8 | (
        m[:, 2].astype(np.uint32) << 16)
    e = m[:, IOA_SIZE:]
    family = kind.family
    q = e[:, kind.size - 1].astype(np.uint32)
    if family in ("M_SP_NA_1", "M_DP_NA_1"):
        value = (e[:, 0] & (0x01 if family == "M_SP_NA_1" else 0x03)).astype(np.float64)
        flags = q & SIQ_MASK
    elif family == "M_ST_NA_1":
        v = (e[:, 0] & 0x7F).astype(np.int16)
        value = np.where(v & 0x40, v - 128, v).astype(np.float64)  # 7-bit two's complement
        flags = q & QDS_MASK
    elif family == "M_BO_NA_1":
        value = _le(e, 0, 4, "<u4").astype(np.float64)
        flags = q & QDS_MASK
    elif family in ("M_ME_NA_1", "M_ME_ND_1"):
        value = _le(e, 0, 2, "<i2") / 32768.0
        flags = q & QDS_MASK if family == "M_ME_NA_1" else np.zeros(len(m), np.uint32)
    elif family == "M_ME_NB_1":
        value = _le(e, 0, 2, "<i2").astype(np.float64)
        flags = q & QDS_MASK
    elif family == "M_ME_NC_1":
        value = _le(e, 0, 4, "<f4").astype(np.float64)
        flags = q & QDS_MASK
    else:  # M_IT_NA_1: binary counter reading, then sequence number with CY, CA, IV
        value = _le(e, 0, 4, "<i4").astype(np.float64)
        flags = (q & IV) | (q & 0x60) << 3
    time_ns = None
    if kind.timed:
        time_ns, time_flags = cp56(e[:, kind.size:], zone)
        flags |= time_flags
    return Columns(ioa, value, flags, time_ns)


_MS_PER_DAY = 86_400_000


def _days_from_civil(y: np.ndarray, m: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 of proleptic Gregorian dates (H. Hinnant's algorithm)."""
    y = y - (m <= 2)
    era = np.floor_divide(y, 400)
    yoe = y - era * 400
    doy = (153 * (m + np.where(m > 2, -3, 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def cp56(t: np.ndarray, zone: ZoneInfo | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(ns since the epoch, quality flags) of CP56Time2a tags (an (n, 7) uint8 array).

    Years are 2000-2099. A tag with a field out of range (minute 60, month 0) decodes as
    0 with TIME_IV. In a zone with summer time, SU picks the summer reading of an hour that
    occurs twice."""
    t = t.astype(np.int64)
    ms = t[:, 0] | t[:, 1] << 8
    minute, hour, day = t[:, 2] & 0x3F, t[:, 3] & 0x1F, t[:, 4] & 0x1F
    month, year = t[:, 5] & 0x0F, 2000 + (t[:, 6] & 0x7F)
    flags = np.where(t[:, 2] & 0x80, TIME_IV, 0) | np.where(t[:, 2] & 0x40, TIME_SB, 0)
    sane = ((ms < 60_000) & (minute < 60) & (hour < 24) & (day >= 1) & (day <= 31)
            & (month >= 1) & (month <= 12))
    flags = (flags | np.where(sane, 0, TIME_IV)).astype(np.uint32)
    days = _days_from_civil(year, np.where(sane, month, 1), np.where(sane, day, 1))
    local_ms = np.where(sane, days * _MS_PER_DAY + (hour * 60 + minute) * 60_000 + ms, 0)
    if zone is not None and len(local_ms):
        local_ms = _to_utc(local_ms, (t[:, 3] & 0x80).astype(bool), zone)
    return local_ms * 1_000_000, flags


def _to_utc(local_ms: np.ndarray, summer: np.ndarray, zone: ZoneInfo) -> np.ndarray:
    """Local wall-clock ms to UTC ms, one zone look-up per distinct hour."""
    epoch = datetime(1970, 1, 1)
    hours, inverse = np.unique(np.stack([local_ms // 3_600_000, summer]), axis=1,
                               return_inverse=True)
    offsets = np.empty(hours.shape[1], np.int64)
    for i, (h, su) in enumerate(hours.T):
        wall = (epoch + timedelta(hours=int(h))).replace(tzinfo=zone, fold=0 if su else 1)
        off = wall.utcoffset()
        offsets[i] = int(off.total_seconds() * 1000) if off is not None else 0
    return local_ms - offsets[inverse.reshape(-1)]


def command(type_id: int, cot: int, common_address: int, qualifier: int) -> bytes:
    """A station-wide command ASDU (IOA 0): interrogation (QOI) or counter interrogation
    (QCC), as activation or deactivation."""
    return struct.pack("<BBBBHBHB", type_id, 1, cot, 0, common_address, 0, 0, qualifier)
