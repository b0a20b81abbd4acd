"""Sparkplug B topics and payloads: births with every metric's name, alias, datatype, unit and
limits; data from a batch's columns (quality as a property, a bad reading as a null metric);
alarm transitions as a node metric.

Payloads are protobuf messages of `sparkplug_b.proto` (the Sparkplug B wire format, see that
file). Timestamps on the wire are milliseconds since the Unix epoch (UTC), as the
specification has them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import overload

import numpy as np

from anomaly.core.batch import Batch, Quality
from gateway.northbound.sparkplug.sparkplug_b_pb2 import Payload
from gateway.site.model import Point

NAMESPACE = "spBv1.0"
# Metric datatypes (Sparkplug B DataType codes)
INT32, UINT64, DOUBLE, BOOLEAN, STRING = 3, 8, 10, 11, 12
# Node metrics every NBIRTH carries (Sparkplug's names, and scadawatch's own under its prefix)
BD_SEQ = "bdSeq"
REBIRTH = "Node Control/Rebirth"
ALARM = "scadawatch/alarm"  # String: a JSON alarm transition (see README.md)
# Device metric in every DBIRTH/DDATA: a number rising with each DDATA of the edge node, kept
# across restarts and re-sends (spool record x MAX_DEVICES + device index), by which a host
# stores a re-sent DDATA once.
RECORD = "scadawatch/record"
MAX_DEVICES = 1024
# Device metric in every DDATA: the record number before it in the lane it was sent in; the
# edge node has no DDATA numbered between the two, so a host keeps what it has stored as ranges
# of numbers though a backlog arrives after the live data that followed it.
AFTER = "scadawatch/after"
# Quality as OPC UA's classic codes, under the property key Ignition and others read; left out
# for a good reading (what they take as the default).
QUALITY_KEY = "Quality"
QUALITY_CODE = {Quality.GOOD: 192, Quality.UNCERTAIN: 64, Quality.BAD: 0}
CODE_QUALITY = {v: k for k, v in QUALITY_CODE.items()}
CAUSE_KEY = "scadawatch/cause"


def topic(group: str, kind: str, node: str, device: str | None = None) -> str:
    """`spBv1.0/<group>/<NBIRTH|DDATA|...>/<node>[/<device>]`."""
    return f"{NAMESPACE}/{group}/{kind}/{node}" + ("" if device is None else f"/{device}")


def state_topic(host_id: str) -> str:
    return f"{NAMESPACE}/STATE/{host_id}"


def state_payload(online: bool, timestamp_ms: int) -> bytes:
    """A primary host's STATE (Sparkplug 3.0: JSON, retained)."""
    return json.dumps({"online": online, "timestamp": timestamp_ms}).encode()


@overload
def ms(ns: int) -> int: ...
@overload
def ms(ns: np.ndarray) -> np.ndarray: ...
def ms(ns: int | np.ndarray) -> int | np.ndarray:
    return ns // 1_000_000


def _property(props: Payload.PropertySet, key: str, value: str | float) -> None:
    props.keys.append(key)
    pv = props.values.add()
    if isinstance(value, str):
        pv.type, pv.string_value = STRING, value
    else:
        pv.type, pv.double_value = DOUBLE, float(value)


def with_seq(seq: int, body: bytes) -> bytes:
    """`body` (a Payload without `seq`) with its `seq`: protobuf reads fields in any order,
    so a body built ahead in a thread gets the session's next number when it is sent."""
    return Payload(seq=seq).SerializeToString() + body


def node_birth(bd_seq: int, now_ms: int) -> bytes:
    p = Payload(timestamp=now_ms)
    p.metrics.add(name=BD_SEQ, timestamp=now_ms, datatype=UINT64, long_value=bd_seq)
    p.metrics.add(name=REBIRTH, timestamp=now_ms, datatype=BOOLEAN, boolean_value=False)
    p.metrics.add(name=ALARM, timestamp=now_ms, datatype=STRING, is_null=True)
    return p.SerializeToString()


def node_death(bd_seq: int, now_ms: int) -> bytes:
    p = Payload(timestamp=now_ms)
    p.metrics.add(name=BD_SEQ, timestamp=now_ms, datatype=UINT64, long_value=bd_seq)
    return p.SerializeToString()


def datatype_of(point: Point) -> int:
    return BOOLEAN if point.type == "bool" else DOUBLE


def device_birth(points: Sequence[tuple[int, Point]], now_ms: int) -> bytes:
    """A DBIRTH: each (alias, point) with its name, datatype and, as properties, the labels a
    host files it under (engUnit, engLow, engHigh as Ignition names them; kind, zone)."""
    p = Payload(timestamp=now_ms)
    p.metrics.add(name=RECORD, timestamp=now_ms, datatype=UINT64, is_null=True)
    p.metrics.add(name=AFTER, timestamp=now_ms, datatype=UINT64, is_null=True)
    for alias, point in points:
        m = p.metrics.add(name=point.tag, alias=alias, timestamp=now_ms,
                          datatype=datatype_of(point), is_null=True)
        props = m.properties
        _property(props, "engUnit", point.unit)
        if point.lo is not None:
            _property(props, "engLow", point.lo)
        if point.hi is not None:
            _property(props, "engHigh", point.hi)
        _property(props, "kind", point.kind)
        if point.zone is not None:
            _property(props, "zone", point.zone)
        if point.description:
            _property(props, "description", point.description)
    return p.SerializeToString()


def device_data(record: int, batch: Batch, aliases: np.ndarray, is_bool: np.ndarray,
                now_ms: int, historical: bool, after: int | None = None) -> bytes:
    """A DDATA of `batch`'s readings (one device's), `aliases[i]` the alias of reading i."""
    p = Payload(timestamp=now_ms)
    p.metrics.add(name=RECORD, timestamp=now_ms, datatype=UINT64, long_value=record)
    if after is not None:
        p.metrics.add(name=AFTER, timestamp=now_ms, datatype=UINT64, long_value=after)
    stamps = ms(batch.source_ts).tolist()
    values = batch.value.tolist()
    qualities = batch.quality.tolist()
    causes = batch.cause.tolist()
    for alias, ts, value, quality, cause, boolean in zip(
            aliases.tolist(), stamps, values, qualities, causes, is_bool.tolist(), strict=True):
        m = p.metrics.add(alias=alias, timestamp=ts,
                          datatype=BOOLEAN if boolean else DOUBLE)
        if historical:
            m.is_historical = True
        if quality == Quality.BAD or value != value:  # NaN: no value to send
            m.is_null = True
        elif boolean:
            m.boolean_value = value != 0.0
        else:
            m.double_value = value
        if quality != Quality.GOOD:
            props = m.properties
            props.keys.extend((QUALITY_KEY, CAUSE_KEY))
            props.values.add(type=INT32, int_value=QUALITY_CODE[Quality(quality)])
            props.values.add(type=UINT64, long_value=cause)
    return p.SerializeToString()


def alarm_data(transitions: Sequence[dict], now_ms: int, historical: bool) -> bytes:
    """An NDATA carrying alarm transitions, one `scadawatch/alarm` metric each."""
    p = Payload(timestamp=now_ms)
    for t in transitions:
        p.metrics.add(name=ALARM, timestamp=t["time_ms"], datatype=STRING,
                      is_historical=historical, string_value=json.dumps(t))
    return p.SerializeToString()


def parse(payload: bytes) -> Payload:
    p = Payload()
    p.ParseFromString(payload)
    return p


@dataclass(frozen=True)
class BornMetric:
    """What a host learns of a device metric from its DBIRTH."""

    name: str
    alias: int
    datatype: int
    unit: str
    lo: float | None
    hi: float | None
    kind: str
    zone: str | None


def born_metrics(p: Payload) -> list[BornMetric]:
    out = []
    for m in p.metrics:
        if m.name in (RECORD, AFTER):
            continue
        props = {k: v for k, v in zip(m.properties.keys, m.properties.values, strict=False)}

        def text(key: str, props: dict = props) -> str | None:
            return props[key].string_value if key in props else None

        def number(key: str, props: dict = props) -> float | None:
            return props[key].double_value if key in props else None

        out.append(BornMetric(name=m.name, alias=m.alias, datatype=m.datatype,
                              unit=text("engUnit") or "", lo=number("engLow"),
                              hi=number("engHigh"), kind=text("kind") or "other",
                              zone=text("zone")))
    return out


@dataclass(frozen=True)
class Readings:
    """A DDATA's readings as columns (aliases, not tags), its record number and the one
    before it in its lane."""

    record: int | None
    after: int | None
    alias: np.ndarray
    ts_ms: np.ndarray
    value: np.ndarray
    quality: np.ndarray
    cause: np.ndarray
    historical: bool


def readings(p: Payload) -> Readings:
    record = after = None
    alias, ts, value, quality, cause = [], [], [], [], []
    historical = False
    for m in p.metrics:
        if m.name == RECORD:
            record = m.long_value
            continue
        if m.name == AFTER:
            after = m.long_value
            continue
        alias.append(m.alias)
        ts.append(m.timestamp)
        historical |= m.is_historical
        q, c = Quality.GOOD, 0
        if m.HasField("properties"):
            props = dict(zip(m.properties.keys, m.properties.values, strict=False))
            if QUALITY_KEY in props:
                q = CODE_QUALITY.get(props[QUALITY_KEY].int_value, Quality.UNCERTAIN)
            if CAUSE_KEY in props:
                c = props[CAUSE_KEY].long_value
        kind = m.WhichOneof("value")
        if m.is_null or kind is None:
            value.append(float("nan"))
            q = Quality.BAD if q == Quality.GOOD else q
        elif kind == "boolean_value":
            value.append(1.0 if m.boolean_value else 0.0)
        else:
            value.append(float(getattr(m, kind)))
        quality.append(q)
        cause.append(c)
    return Readings(record=record, after=after, alias=np.array(alias, np.int64),
                    ts_ms=np.array(ts, np.int64), value=np.array(value, np.float64),
                    quality=np.array(quality, np.uint8), cause=np.array(cause, np.uint32),
                    historical=historical)
