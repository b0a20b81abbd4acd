"""APCI of IEC 60870-5-104 (clause 5): the start byte, length and four control octets
that frame every APDU, in its three formats.

- I format: numbered information transfer, N(S) and N(R) (15 bits each), carries an ASDU.
- S format: numbered supervisory, N(R) only: acknowledges received I frames.
- U format: unnumbered control: STARTDT, STOPDT, TESTFR, each as act and con.

>>> parse_control(i_frame(3, 5, b"")[2:6])
('I', 3, 5)
>>> parse_control(s_frame(7)[2:6])
('S', 0, 7)
>>> parse_control(STARTDT_ACT[2:6])  # STARTDT_ACT_BIT
('U', 4, 0)
"""

from __future__ import annotations

from typing import Literal

START = 0x68
HEADER = 6  # start byte, length, four control octets
MAX_APDU_LENGTH = 253  # the length octet counts the control octets and the ASDU
MIN_APDU_LENGTH = 4
SEQ_MOD = 1 << 15

# U-format function bits (first control octet, with the low bits 0b11).
STARTDT_ACT_BIT, STARTDT_CON_BIT = 0x04, 0x08
STOPDT_ACT_BIT, STOPDT_CON_BIT = 0x10, 0x20
TESTFR_ACT_BIT, TESTFR_CON_BIT = 0x40, 0x80
U_NAMES = {STARTDT_ACT_BIT: "STARTDT act", STARTDT_CON_BIT: "STARTDT con",
           STOPDT_ACT_BIT: "STOPDT act", STOPDT_CON_BIT: "STOPDT con",
           TESTFR_ACT_BIT: "TESTFR act", TESTFR_CON_BIT: "TESTFR con"}

Format = Literal["I", "S", "U"]


def u_frame(function: int) -> bytes:
    return bytes((START, 4, function | 0x03, 0, 0, 0))


STARTDT_ACT = u_frame(STARTDT_ACT_BIT)
STOPDT_ACT = u_frame(STOPDT_ACT_BIT)
TESTFR_ACT = u_frame(TESTFR_ACT_BIT)
TESTFR_CON = u_frame(TESTFR_CON_BIT)


def s_frame(receive_seq: int) -> bytes:
    nr = receive_seq << 1
    return bytes((START, 4, 0x01, 0, nr & 0xFF, nr >> 8))


def i_frame(send_seq: int, receive_seq: int, asdu: bytes) -> bytes:
    ns, nr = send_seq << 1, receive_seq << 1
    return bytes((START, 4 + len(asdu), ns & 0xFF, ns >> 8, nr & 0xFF, nr >> 8)) + asdu


def parse_control(c: bytes | memoryview) -> tuple[Format, int, int]:
    """("I", N(S), N(R)), ("S", 0, N(R)) or ("U", function bits, 0) of four control octets."""
    if not c[0] & 0x01:
        return "I", (c[0] | c[1] << 8) >> 1, (c[2] | c[3] << 8) >> 1
    if not c[0] & 0x02:
        return "S", 0, (c[2] | c[3] << 8) >> 1
    return "U", c[0] & 0xFC, 0


def seq_distance(older: int, newer: int) -> int:
    """How many sequence numbers `newer` is past `older`, modulo 2^15."""
    return (newer - older) % SEQ_MOD
