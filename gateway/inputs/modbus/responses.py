"""Register responses (function codes 3 and 4) decoded in one call, for pymodbus' decoder.

pymodbus decodes a register response one register at a time (a slice, `struct.unpack` and a
list append each: 125 of them per full read) and formats every decoded response for a debug
line even when debug logging is off. At 10,000 points polled every second that was a fifth of
the gateway's CPU. These classes, registered on each client (`register(client)`), decode the
same frame into the same register values, check it as strictly, and print without the values.
`registers` is a read-only big-endian uint16 array over the frame's bytes, not a list: the
driver copies it into its poll buffer as one block (a list of 125 ints cost ~10 us more per
request to make and to convert back).
"""

from __future__ import annotations

import numpy as np
from pymodbus.client.base import ModbusBaseClient
from pymodbus.exceptions import ModbusIOException
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersResponse,
    ReadInputRegistersResponse,
)


def _decode(pdu: ReadHoldingRegistersResponse, data: bytes) -> None:
    size = data[0]  # byte count
    if size >= len(data) or size % 2:
        raise ModbusIOException(f"byte_count {size} does not fit a packet of {len(data)} bytes "
                                "in whole registers", function_code=pdu.function_code)
    pdu.registers = np.frombuffer(data, ">u2", size // 2, 1)  # type: ignore[assignment]


def _text(pdu: ReadHoldingRegistersResponse) -> str:
    return (f"{type(pdu).__name__}(dev_id={pdu.dev_id}, transaction_id={pdu.transaction_id}, "
            f"registers={len(pdu.registers)})")


class HoldingRegisters(ReadHoldingRegistersResponse):
    decode = _decode
    __str__ = _text


class InputRegisters(ReadInputRegistersResponse):
    decode = _decode
    __str__ = _text


def register(client: ModbusBaseClient) -> None:
    """Make `client` decode register responses with these classes."""
    client.register(HoldingRegisters)
    client.register(InputRegisters)
