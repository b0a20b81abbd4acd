"""The application requests the master sends beyond dnp3py's own builders: reads of chosen
variations, the LAN time synchronisation and clearing the outstation's restart indication.

Reads name the variation the site file gives each group (IEEE 1815-2012 qualifier 0x06, all
points): the static data an integrity poll would take from class 0, and the events of a group
ahead of the class 1-3 reads. An outstation that reports analogs as 32-bit integers by
default (opendnp3 does: g30v1, g32v1) so still answers in floats when asked for g30v5/g32v7,
and 25.5 arrives as 25.5.
"""

from __future__ import annotations

from collections.abc import Iterable

from dnp3.application.builder import build_read_request, build_write_request
from dnp3.application.fragment import ObjectBlock, RequestFragment
from dnp3.application.header import RequestHeader
from dnp3.application.qualifiers import ObjectHeader, PrefixCode, RangeCode
from dnp3.core.enums import FunctionCode

CLASS_EVENTS = ((60, 2), (60, 3), (60, 4))  # classes 1, 2, 3
_TIME_LAST_RECORDED = 50, 3  # A.23.3: the time at the last RECORD_CURRENT_TIME
_IIN = 80, 1  # A.37: internal indications, written to clear one
_DEVICE_RESTART_BIT = 7  # IIN1.7


def _all(group: int, variation: int) -> ObjectBlock:
    return ObjectBlock(ObjectHeader.build(group, variation, PrefixCode.NONE,
                                          RangeCode.ALL_OBJECTS))


def read(seq: int, *reads: Iterable[tuple[int, int]]) -> RequestFragment:
    """READ all points of each (group, variation), in order, in one request."""
    return build_read_request(tuple(_all(g, v) for part in reads for g, v in part), seq=seq)


def record_current_time(seq: int) -> RequestFragment:
    """Step 1 of the LAN procedure (IEEE 1815-2012 5.4.2): the outstation notes its time."""
    return RequestFragment(header=RequestHeader.build(
        function=FunctionCode.RECORD_CURRENT_TIME, seq=seq))


def write_last_recorded_time(seq: int, ms: int) -> RequestFragment:
    """Step 2: our time (ms since the epoch) when step 1 was sent, as g50v3 (one object)."""
    data = bytes([1]) + ms.to_bytes(6, "little")  # count 1, DNP3 time
    header = ObjectHeader.build(*_TIME_LAST_RECORDED, PrefixCode.NONE, RangeCode.UINT8_COUNT)
    return build_write_request((ObjectBlock(header, data),), seq=seq)


def clear_restart(seq: int) -> RequestFragment:
    """WRITE IIN1.7 = 0: the master has seen the restart (1815-2012 5.1.8)."""
    bit = _DEVICE_RESTART_BIT
    header = ObjectHeader.build(*_IIN, PrefixCode.NONE, RangeCode.UINT8_START_STOP)
    return build_write_request((ObjectBlock(header, bytes([bit, bit, 0])),), seq=seq)
