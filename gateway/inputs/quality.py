"""Cause codes that travel with each reading (`Batch.cause`), and their names.

- 0: good.
- Small codes: what the gateway saw (timeout, connection, ...).
- `MODBUS_EXCEPTION_BASE + code`: the device answered with Modbus exception `code`
  (`MODBUS_EXCEPTION_BASE + 2`: illegal data address).
- `IEC104_BASE | bits`: IEC 60870-5-104 quality bits as the device sent them
  (gateway.inputs.iec104.asdu: IV 0x80, NT 0x40, SB 0x20, BL 0x10, OV 0x01; a counter's
  CY 0x100, CA 0x200; a time tag marked invalid 0x400 or substituted 0x800).
- `DNP3_BASE | kind << 8 | flags`: DNP3 point flags as the outstation sent them (IEEE
  1815-2012 A.1: ONLINE 0x01 clear, RESTART 0x02, COMM_LOST 0x04, REMOTE_FORCED 0x08,
  LOCAL_FORCED 0x10; 0x20 and 0x40 by kind: a binary's CHATTER_FILTER, an analog's
  OVER_RANGE and REFERENCE_ERR, a counter's ROLLOVER and DISCONTINUITY).
- `>= OPCUA_STATUS_MIN`: an OPC UA status code, passed through as-is.

>>> cause_name(TIMEOUT), cause_name(MODBUS_EXCEPTION_BASE + 2), cause_name(0x80790000)
('timeout', 'illegal_data_address', 'opcua_BadNoSubscription')
>>> cause_name(0x80000000 | 0x123)  # a code the OPC UA specification does not name
'opcua_0x80000123'
>>> cause_name(MODBUS_EXCEPTION_BASE)  # exception code 0: no device may send it, some do
'modbus_exception_0'
>>> cause_name(IEC104_BASE | 0x80 | 0x40), cause_name(IEC104_BASE | 0x400)
('iec104_iv_nt', 'iec104_time_iv')
>>> cause_name(dnp3(DNP3_ANALOG, 0x01 | 0x20)), cause_name(dnp3(DNP3_COUNTER, 0x02))
('dnp3_over_range', 'dnp3_offline_restart')
"""

from __future__ import annotations

OK = 0
TIMEOUT = 1  # no answer within the device's timeout, after its retries
CONNECTION = 2  # could not connect, or the connection dropped
INVALID_RESPONSE = 3  # an answer that does not fit the request (length, framing, ids)

MODBUS_EXCEPTION_BASE = 0x100
IEC104_BASE = 0x1000
DNP3_BASE = 0x2000
DNP3_BINARY, DNP3_DOUBLE_BIT, DNP3_ANALOG, DNP3_COUNTER = range(4)  # the `kind` of a cause
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

_DNP3_BITS = ((0x02, "restart"), (0x04, "comm_lost"), (0x08, "remote_forced"),
              (0x10, "local_forced"))
_DNP3_KIND_BITS = {DNP3_BINARY: ((0x20, "chatter_filter"),), DNP3_DOUBLE_BIT: (
    (0x20, "chatter_filter"),), DNP3_ANALOG: ((0x20, "over_range"), (0x40, "reference_err")),
    DNP3_COUNTER: ((0x20, "rollover"), (0x40, "discontinuity"))}


def modbus_exception(code: int) -> int:
    """The cause code of Modbus exception response `code`."""
    return MODBUS_EXCEPTION_BASE + code


def dnp3(kind: int, flags: int) -> int:
    """The cause code of a DNP3 point's `flags` (its state bit left out) of `kind`."""
    return DNP3_BASE | kind << 8 | flags


def cause_name(code: int) -> str:
    """A short snake_case name for a cause code (for logs and metric labels)."""
    if code >= OPCUA_STATUS_MIN:
        return f"opcua_{_opcua_name(code) or f'0x{code:08X}'}"
    if code & ~0xFFF == IEC104_BASE:
        return "iec104_" + "_".join(n for bit, n in _IEC104_BITS if code & bit)
    if code & ~0xFFF == DNP3_BASE:
        kind, flags = code >> 8 & 0xF, code & 0xFF
        names = [] if flags & 0x01 else ["offline"]
        names += [n for bit, n in _DNP3_BITS + _DNP3_KIND_BITS.get(kind, ()) if flags & bit]
        return "dnp3_" + "_".join(names)
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
