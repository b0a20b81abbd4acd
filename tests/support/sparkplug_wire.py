"""An independent decoder of Sparkplug B payloads: protobuf's wire format parsed by hand from
the field numbers of Eclipse Tahu's sparkplug_b.proto (the Sparkplug B specification), using
neither scadawatch's schema nor the protobuf library, so a test can tell standard payloads
from merely self-consistent ones."""

from __future__ import annotations

import struct
from collections import defaultdict

# Payload: timestamp 1, metrics 2, seq 3, uuid 4, body 5.
# Metric: name 1, alias 2, timestamp 3, datatype 4, is_historical 5, is_transient 6,
#   is_null 7, metadata 8, properties 9, int 10, long 11, float 12, double 13, boolean 14,
#   string 15, bytes 16.
# PropertySet: keys 1, values 2. PropertyValue: type 1, is_null 2, int 3, long 4, float 5,
#   double 6, boolean 7, string 8.


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i
        shift += 7


def fields(buf: bytes) -> dict[int, list]:
    """Field number -> values in order: ints for varints, bytes for length-delimited, raw
    8/4 bytes for fixed64/fixed32."""
    out: dict[int, list] = defaultdict(list)
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire == 2:
            n, i = _varint(buf, i)
            value, i = buf[i:i + n], i + n
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"wire type {wire} at byte {i}")
        out[number].append(value)
    return out


def _last(f: dict[int, list], n: int, default: object = None) -> object:
    return f[n][-1] if f.get(n) else default


def _properties(buf: bytes) -> dict[str, object]:
    f = fields(buf)
    keys = [k.decode() for k in f.get(1, [])]
    values = []
    for raw in f.get(2, []):
        v = fields(raw)
        if v.get(6):
            values.append(struct.unpack("<d", v[6][-1])[0])
        elif v.get(8):
            values.append(v[8][-1].decode())
        elif v.get(3) or v.get(4):
            values.append((v.get(3) or v.get(4))[-1])
        else:
            values.append(None)
    return dict(zip(keys, values, strict=True))


def metric(buf: bytes) -> dict:
    f = fields(buf)
    value: object = None
    if f.get(13):
        value = struct.unpack("<d", f[13][-1])[0]
    elif f.get(14):
        value = bool(f[14][-1])
    elif f.get(11):
        value = f[11][-1]
    elif f.get(10):
        value = f[10][-1]
    elif f.get(15):
        value = f[15][-1].decode()
    return {"name": _last(f, 1, b"").decode() or None, "alias": _last(f, 2),
            "timestamp": _last(f, 3), "datatype": _last(f, 4),
            "is_historical": bool(_last(f, 5, 0)), "is_null": bool(_last(f, 7, 0)),
            "properties": _properties(f[9][-1]) if f.get(9) else {}, "value": value}


def payload(buf: bytes) -> dict:
    f = fields(buf)
    return {"timestamp": _last(f, 1), "seq": _last(f, 3),
            "metrics": [metric(m) for m in f.get(2, [])]}
