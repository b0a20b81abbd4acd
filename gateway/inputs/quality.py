"""Cause codes that travel with each reading (`Batch.cause`), and their names.

- 0: good.
- Small codes: what the gateway saw (timeout, connection, ...).
- `MODBUS_EXCEPTION_BASE + code`: the device answered with Modbus exception `code`
  (`MODBUS_EXCEPTION_BASE + 2`: illegal data address).
- `IEC104_BASE | bits`: IEC 60870-5-104 quality bits as the device sent them
  (gateway.inputs.iec104.asdu: IV 0x80, NT 0x40, SB 0x20, BL 0x10, OV 0x01; a counter's
  CY 0x100, CA 0x200; a time tag marked invalid 0x400 or substituted 0x800).
- `>= OPCUA_STATUS_MIN`: an OPC UA status code, passed through as-is.

>>> cause_name(TIMEOUT), cause_name(MODBUS_EXCEPTION_BASE + 2), cause_name(0x80790000)
('timeout', 'illegal_data_address', 'opcua_BadNoSubscription')
>>> cause_name(0x80000000 | 0x123)  # a code the OPC UA specification does not name
'opcua_0x80000123'
>>> cause_name(MODBUS_EXCEPTION_BASE)  # exception code 0: no device may send it, some do
'modbus_exception_0'
>>> cause_name(IEC104_BASE | 0x80 | 0x40), cause_name(IEC104_BASE | 0x400)
('iec104_iv_nt', 'iec104_time_iv')
"""

from __future__ import annotations

OK = 0
TIMEOUT = 1  # no answer within the device's timeout, after its retries
CONNECTION = 2  # could not connect, or the connection dropped
INVALID_RESPONSE = 3  # an answer that does not fit the request (length, framing, ids)

MODBUS_EXCEPTION_BASE = 0x100
IEC104_BASE = 0x1000
OPCUA_STATUS_MIN = 0x10000000

_NAMES = {
    OK: "ok",
    TIMEOUT: "timeout",
    CONNECTION: "connection",
    INVALID_RESPONSE: "invalid_response",
}
# Modbus Application Protocol v1.1b3, section 7.
_MODBUS_EXCEPTIONS = {
    1: "illegal_function",
    2: "illegal_data_address",
    3: "illegal_data_value",
    4: "server_device_failure",
    5: "acknowledge",
    6: "server_device_busy",
    8: "memory_parity_error",
    10: "gateway_path_unavailable",
    11: "gateway_target_no_response",
}

_IEC104_BITS = ((0x80, "iv"), (0x40, "nt"), (0x20, "sb"), (0x10, "bl"), (0x01, "ov"),
                (0x100, "cy"), (0x200, "ca"), (0x400, "time_iv"), (0x800, "time_sb"))


def modbus_exception(code: int) -> int:
    """The cause code of Modbus exception response `code`."""
    return MODBUS_EXCEPTION_BASE + code


def cause_name(code: int) -> str:
    """A short snake_case name for a cause code (for logs and metric labels)."""
    if code >= OPCUA_STATUS_MIN:
        return f"opcua_{_opcua_name(code) or f'0x{code:08X}'}"
    if code & ~0xFFF == IEC104_BASE:
        return "iec104_" + "_".join(n for bit, n in _IEC104_BITS if code & bit)
    if code >= MODBUS_EXCEPTION_BASE:
        exc = code - MODBUS_EXCEPTION_BASE
        return _MODBUS_EXCEPTIONS.get(exc, f"modbus_exception_{exc}")
    return _NAMES.get(code, f"cause_{code}")


def _opcua_name(code: int) -> str | None:
    """The specification's name of an OPC UA status code (BadNoSubscription), if any; asyncua
    holds the table, imported only here: a Modbus-only gateway never loads it."""
    try:
        from asyncua.ua.status_codes import get_name_and_doc
    except ImportError:
        return None
    name, doc = get_name_and_doc(code)
    return None if doc.startswith("Unknown") else name
