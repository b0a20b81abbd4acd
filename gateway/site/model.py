"""The site file: pydantic models of DESIGN.md's TOML keys.

Each model checks its values alone; cross-field rules live in `gateway.site.rules`, reading
and reporting in `gateway.site.loader`.
"""

from __future__ import annotations

import itertools
import re
import sys
import urllib.parse
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.dataclasses import dataclass as pydantic_dataclass
from pydantic.fields import FieldInfo
from pydantic_core import ArgsKwargs, PydanticCustomError, SchemaValidator

from anomaly.core.alarms import CHATTERING, PRIORITIES, AlarmKind, Priority
from gateway.site.northbound import Northbound
from timegrammar import DurationError, seconds

DeviceProtocol = Literal["modbus-tcp", "modbus-rtu", "opcua", "iec104", "dnp3"]
PointKind = Literal[
    "pressure", "flow", "level", "status", "voltage", "current", "frequency", "power",
    "temperature", "other",
]
RegisterKind = Literal["holding", "input", "coil", "discrete"]
DataType = Literal["bool", "int16", "uint16", "int32", "uint32", "int64", "float32", "float64"]
WordOrder = Literal["ABCD", "CDAB", "BADC", "DCBA"]
# IEC 104 `typeid`: a type family, or its time-tagged type (the same point): IEC_FAMILY
IecType = Literal["M_SP_NA_1", "M_SP_TB_1", "M_DP_NA_1", "M_DP_TB_1", "M_ST_NA_1", "M_ST_TB_1",
                  "M_BO_NA_1", "M_BO_TB_1", "M_ME_NA_1", "M_ME_TD_1", "M_ME_NB_1", "M_ME_TE_1",
                  "M_ME_NC_1", "M_ME_TF_1", "M_IT_NA_1", "M_IT_TB_1", "M_ME_ND_1"]
IEC_FAMILY: dict[str, str] = {
    **{f: f for f in ("M_SP_NA_1", "M_DP_NA_1", "M_ST_NA_1", "M_BO_NA_1", "M_ME_NA_1",
                      "M_ME_NB_1", "M_ME_NC_1", "M_IT_NA_1", "M_ME_ND_1")},
    "M_SP_TB_1": "M_SP_NA_1", "M_DP_TB_1": "M_DP_NA_1", "M_ST_TB_1": "M_ST_NA_1",
    "M_BO_TB_1": "M_BO_NA_1", "M_ME_TD_1": "M_ME_NA_1", "M_ME_TE_1": "M_ME_NB_1",
    "M_ME_TF_1": "M_ME_NC_1", "M_IT_TB_1": "M_IT_NA_1"}
# DNP3 static group of a point -> its event group and the variations of each the master reads
# (IEEE 1815-2012 A.2-A.32; 0 in a read: the outstation's default variation)
DNP3_GROUPS: dict[int, tuple[int, frozenset[int], frozenset[int]]] = {
    1: (2, frozenset({0, 1, 2}), frozenset({1, 2, 3})),  # binary input
    3: (4, frozenset({0, 1, 2}), frozenset({1, 2, 3})),  # double-bit binary input
    20: (22, frozenset({0, 1, 2, 5, 6}), frozenset({1, 2, 5, 6})),  # counter
    30: (32, frozenset({0, 1, 2, 3, 4, 5, 6}), frozenset(range(1, 9))),  # analog input
}

_ORIGIN = re.compile(r"https?://(\[[0-9A-Fa-f:.]+\]|[^/\s:\[\]]+)(:\d{1,5})?")

BIT_TABLES = ("coil", "discrete")
# Registers a value occupies in a holding/input table (a coil or discrete input is one bit).
REGISTER_WIDTH: dict[str, int] = {"bool": 1, "int16": 1, "uint16": 1, "int32": 2, "uint32": 2,
                                  "float32": 2, "int64": 4, "float64": 4}

OPCUA_POLICIES = ("None", "Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss")


def opcua_security_problem(policy: str, mode: str) -> tuple[str, str] | None:
    """(key, reason) if an OPC UA security policy and mode don't go together, else None."""
    if policy not in OPCUA_POLICIES:
        return "security_policy", f"unknown policy {policy!r}; known: {', '.join(OPCUA_POLICIES)}"
    if (policy == "None") != (mode == "None"):
        return "security_mode", (f"mode {mode!r} does not go with policy {policy!r}: policy "
                                 "'None' takes mode 'None', any other policy 'Sign' or "
                                 "'SignAndEncrypt'")
    return None


def describe(value: object) -> str:
    """A value as the site file would spell it, for a message: `true`, 'text', a table."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return repr(value) if isinstance(value, str) else str(value)


def as_path(value: object) -> Path:
    """A path from the site file, `~` and `~user` expanded."""
    # TOML has no path type: a path is text (strict validation would refuse text for a Path).
    if isinstance(value, Path):  # a Site built in code
        value = str(value)
    if not isinstance(value, str):
        raise PydanticCustomError("path_type",
                                  f"expected a file path (text), got {describe(value)}")
    if "\0" in value:
        raise PydanticCustomError("path_nul", f"{value!r} holds a NUL character (\\u0000), "
                                  "which no file name can hold")
    try:
        return Path(value).expanduser()
    except RuntimeError:  # pathlib's word for a `~user` it cannot resolve
        user = value[1:].partition("/")[0]
        raise PydanticCustomError("path_user", (
            f"{value!r}: no user {user!r} on this machine, so '~{user}' names no home "
            "directory") if user else (f"{value!r}: '~' names no home directory (HOME is "
                                       "not set)")) from None


FilePath = Annotated[Path, BeforeValidator(as_path)]

# Characters of a name (a tag, zone or device): alarm ids and API requests carry them.
NAME_MAX = 200

# Ranges of the numeric settings: beyond them a value is accepted as a number but leaves the
# gateway useless (a spool of 1 byte drops everything, a poll every 1e-300 s is a busy loop).
MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0


def _not_zero(value: float) -> float:
    if value == 0:
        raise PydanticCustomError("zero_scale", "must not be 0: every reading would be the "
                                  "offset")
    return value



def _seconds(value: object) -> object:
    # A duration may be written in the duration grammar ("30s", "10m", "1h30m"); a number is
    # seconds. Anything else goes on to the number check, which names what it got.
    if isinstance(value, str):
        try:
            return seconds(value)
        except DurationError as e:
            raise PydanticCustomError("duration", str(e)) from None
    return value


Seconds = Annotated[float, BeforeValidator(_seconds)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True,
                              allow_inf_nan=False)


class SiteSection(Strict):
    name: str = Field(min_length=1)
    data_dir: FilePath = Path("./scadawatch-data")
    points_csv: FilePath | None = None


# seconds: [historian] flush_interval's default for kind "influxdb" (Node-RED's batch node
# flushes every 1 s too)
INFLUXDB_FLUSH = 1.0


class HistorianSection(Strict):
    kind: Literal["embedded", "influxdb"] = "embedded"
    url: str = "http://127.0.0.1:8086"
    api: Literal["v1", "v2"] = "v2"
    bucket: str = ""  # required by api "v2"
    org: str = ""
    token_env: str = "INFLUX_TOKEN"
    database: str = ""  # required by api "v1"
    retention_policy: str = ""
    username: str = ""
    password_env: str = "INFLUX_PASSWORD"
    batch_size: int = Field(default=5000, ge=1, le=100_000)  # lines per write request
    # seconds a caught-up sink gathers readings: each commit of the embedded historian costs
    # pages whatever it holds, and flash wears by the page (10 s, Telegraf's default too); an
    # InfluxDB is written over the network, which wears no card of the gateway's, and its
    # latest value in Grafana should be a poll old, not ten (INFLUXDB_FLUSH)
    flush_interval: Seconds = Field(default=10.0, ge=0.01, le=MINUTE)
    max_rate: float = Field(default=200_000.0, ge=10)  # readings/s of backlog in a catch-up
    timeout: Seconds = Field(default=10.0, ge=0.1, le=10 * MINUTE)  # per request
    gzip: bool | None = None  # None: compress unless the URL is a loopback address
    # Also write these timestamps as integer fields (ns): "server" -> server_ts, "gateway" ->
    # gateway_ts. The point's time is always the source time; the others cost the database
    # a field series per point each, so they are written only when asked for.
    timestamp_fields: list[Literal["server", "gateway"]] = []

    @model_validator(mode="before")
    @classmethod
    def _default_flush(cls, data: Any) -> Any:
        if (isinstance(data, dict) and data.get("kind") == "influxdb"
                and "flush_interval" not in data):
            return {**data, "flush_interval": INFLUXDB_FLUSH}
        return data


class SpoolSection(Strict):
    max_bytes: int = Field(default=1 << 30, ge=1 << 20)  # bound on disk use
    max_age: Seconds = Field(default=7 * DAY, ge=MINUTE)  # older segments are dropped
    segment_bytes: int = Field(default=16 << 20, ge=1 << 10, le=1 << 30)
    # 0: fsync every batch. A sync costs the spool's last page (4 KiB) whatever it holds; a
    # power cut loses at most this many seconds (a crash of the process: nothing)
    fsync_interval: Seconds = Field(default=10.0, ge=0, le=MINUTE)


Delay = Annotated[Seconds, Field(ge=0, le=7 * DAY)]


def _chatter_rule(rule: list[float]) -> list[float]:
    if len(rule) != 2 or rule[0] != int(rule[0]) or rule[0] < 2 or rule[1] <= 0:
        shown = "[" + ", ".join(f"{x:g}" for x in rule) + "]"
        raise PydanticCustomError("chatter_rule", f"{shown}: give [raises, seconds], at least 2 "
                                  "raises within more than 0 seconds, e.g. [3, 3600]")
    return rule


def unknown_zone(name: str) -> str | None:
    """Why `name` is no time zone this machine knows, or None: for the site-file check."""
    if name == "UTC":
        return None
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return f"unknown time zone {name!r}: give an IANA name such as 'Europe/Berlin', or 'UTC'"
    return None


def _time_zone(name: str) -> str:
    if (why := unknown_zone(name)) is not None:
        raise PydanticCustomError("time_zone", why)
    return name


class AnomalySection(Strict):
    """The anomaly engine (`anomaly.engine.EngineSettings`): delays in seconds per alarm kind
    override the defaults of `anomaly/core/alarms.py`."""

    enabled: bool = True
    interval: Seconds = Field(default=60.0, ge=1, le=DAY)  # per detector tick
    lateness: Seconds = Field(default=2.0, ge=0, le=HOUR)  # a tick waits for late readings
    disable: list[AlarmKind] = []
    on_delay: dict[AlarmKind, Delay] = {}
    off_delay: dict[AlarmKind, Delay] = {}
    priority: dict[AlarmKind, Priority] = {}
    # The zone-level multivariate detector (anomaly/zone_score.py); `river`, its key when it was
    # river's HalfSpaceTrees, still reads.
    zone_model: bool = Field(default=True, validation_alias=AliasChoices("zone_model", "river"))
    # [raises, seconds]: an alarm (kind and subject) raised this often chatters and is held
    # back until it behaves (anomaly/core/alarms.py); [] holds nothing back
    chattering: list[Annotated[list[float], AfterValidator(_chatter_rule)]] = Field(
        default_factory=lambda: [list(r) for r in CHATTERING])
    save_interval: Seconds = Field(default=300.0, ge=1, le=DAY)  # between state saves
    # The site's IANA time zone: daily profiles and weekday/weekend are on its clock
    # (anomaly/core/clock.py); a saved state learned in another zone is not resumed
    time_zone: Annotated[str, AfterValidator(_time_zone)] = "UTC"


# [alarms] keys renamed: old name -> new (the old one still reads, and is warned about)
RENAMED_ALARMS_KEYS = {"stale_after": "stale_alarm_after"}


class AlarmsSection(Strict):
    """Alarm-system KPIs (EEMUA 191) and operator limits."""

    window: Seconds = Field(default=600.0, ge=MINUTE, le=DAY)  # alarm rates are counted over
    flood_start: int = Field(default=10, ge=1, le=10_000)  # a flood starts above this many
    flood_end: int = Field(default=5, ge=1)  # ... per window, and ends below this many
    chatter_count: int = Field(default=3, ge=2, le=1000)  # raises of one condition within
    chatter_window: Seconds = Field(default=60.0, ge=1, le=DAY)  # this long: chattering
    # active this long: a stale alarm; its old name `stale_after` still reads (renamed: a
    # device's stale_after counts polls, one name for two things in two units)
    stale_alarm_after: Seconds = Field(
        default=DAY, ge=MINUTE, le=365 * DAY,
        validation_alias=AliasChoices("stale_alarm_after", *RENAMED_ALARMS_KEYS))
    max_shelve: Seconds = Field(default=DAY, ge=MINUTE, le=30 * DAY)  # an operator may shelve
    _old_keys: tuple[str, ...] = PrivateAttr(default=())  # old names the section was given

    @model_validator(mode="wrap")
    @classmethod
    def _renamed(cls, data: Any,
                 handler: ModelWrapValidatorHandler[AlarmsSection]) -> AlarmsSection:
        if not isinstance(data, dict):  # a section validated before, as part of a Site
            return handler(data)
        old = tuple(k for k in RENAMED_ALARMS_KEYS if k in data)
        for key in old:
            if RENAMED_ALARMS_KEYS[key] in data:
                raise PydanticCustomError("renamed", f"{key} is the old name of "
                                          f"{RENAMED_ALARMS_KEYS[key]}: give only one")
        section = handler(data)
        section._old_keys = old
        return section

    @property
    def old_keys(self) -> tuple[str, ...]:
        return self._old_keys

    @model_validator(mode="after")
    def _flood_hysteresis(self) -> AlarmsSection:
        if self.flood_end > self.flood_start:
            raise PydanticCustomError("flood", f"flood_end ({self.flood_end}) must not be above "
                                      f"flood_start ({self.flood_start})")
        return self


def _http_url(value: str) -> str:
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
        raise PydanticCustomError("url", f"{value!r} is not an http:// or https:// URL")
    return value


class Webhook(Strict):
    """An on-call receiver: raise and clear transitions of annunciated alarms are POSTed to
    `url` as JSON, signed with HMAC-SHA256 when `secret_env` names an environment variable."""

    url: Annotated[str, AfterValidator(_http_url)]
    name: str | None = Field(default=None, min_length=1)  # default: the URL's host and port
    min_priority: Priority = "low"
    priorities: list[Priority] | None = None  # exactly these (instead of min_priority)
    secret_env: str | None = Field(default=None, min_length=1)
    timeout: Seconds = Field(default=10.0, ge=0.1, le=5 * MINUTE)  # per request
    retry_initial: Seconds = Field(default=1.0, ge=0.01, le=HOUR)  # before the first retry,
    retry_max: Seconds = Field(default=300.0, ge=0.01, le=DAY)  # doubling up to this

    @field_validator("retry_max")
    @classmethod
    def _retry_grows(cls, value: float, info: ValidationInfo) -> float:
        first = info.data.get("retry_initial")
        if first is not None and value < first:
            raise PydanticCustomError("retry_max", f"must not be below retry_initial ({first:g})")
        return value

    @model_validator(mode="after")
    def _one_priority_rule(self) -> Webhook:
        if self.priorities is not None and "min_priority" in self.model_fields_set:
            raise PydanticCustomError("priority_rule", "give min_priority or priorities, "
                                      "not both")
        return self

    @property
    def key(self) -> str:
        """How logs and the alarm store (its outbox cursor) know the webhook: its name, else
        its URL's host and port; never the URL, whose user, password, path or query may be
        a secret."""
        return self.name or urllib.parse.urlsplit(self.url).netloc.rpartition("@")[2]

    def accepts(self, priority: str) -> bool:
        if self.priorities is not None:
            return priority in self.priorities
        return PRIORITIES.index(priority) >= PRIORITIES.index(self.min_priority)


def _origin(value: str) -> str:
    """A browser origin as the `Origin` header carries it: scheme, host and optional port."""
    if value != "*" and not _ORIGIN.fullmatch(value):
        raise PydanticCustomError("origin", f"{value!r} is not an origin: use "
                                  "'https://host' or 'http://host:port', without a path or a "
                                  "trailing slash (or '*' for any)")
    return value


class ApiSection(Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    # Browser origins (`https://hmi.example:8443`) allowed to call the API cross-origin; none
    # by default (CORS off).
    cors_origins: list[Annotated[str, AfterValidator(_origin)]] = []
    # PEM certificate (chain) and its unencrypted private key: with both, the API speaks HTTPS.
    tls_cert: FilePath | None = None
    tls_key: FilePath | None = None


class Device(Strict):
    name: str = Field(min_length=1, max_length=NAME_MAX)
    protocol: DeviceProtocol
    poll_interval: Seconds = Field(default=1.0, ge=0.01, le=DAY)
    timeout: Seconds = Field(default=1.0, ge=0.01, le=10 * MINUTE)
    retries: int = Field(default=1, ge=0, le=10)
    stale_after: int = Field(default=3, ge=1, le=10_000)  # poll intervals without an update
    # Modbus TCP
    host: str = "127.0.0.1"
    port: int = Field(default=502, ge=1, le=65535)
    unit: int = Field(default=1, ge=0, le=255)
    connections: int = Field(default=1, ge=1, le=16)
    # Modbus RTU
    serial_port: str | None = None
    baudrate: int = Field(default=19200, ge=50, le=4_000_000)
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    # Modbus request planning
    max_registers: int = Field(default=125, ge=1, le=125)
    max_bits: int = Field(default=2000, ge=1, le=2000)
    max_gap: int = Field(default=0, ge=0, le=2000)  # unused registers a request may span
    pause: Seconds = Field(default=0.0, ge=0, le=10)  # between requests on the bus
    # OPC UA
    endpoint: str | None = None
    security_policy: str = "None"
    security_mode: Literal["None", "Sign", "SignAndEncrypt"] = "None"
    username: str | None = None
    password_env: str | None = None
    password_file: FilePath | None = None
    # A username over security policy None sends its password in clear: only if set.
    allow_plaintext_password: bool = False
    mode: Literal["subscribe", "poll"] = "subscribe"
    # None: poll_interval
    publishing_interval: Seconds | None = Field(default=None, ge=0.01, le=DAY)
    # Defaults of the device's points (0 asks the server's fastest rate).
    sampling_interval: Seconds | None = Field(default=None, ge=0, le=DAY)  # None: publishing
    queue_size: int | None = Field(default=None, ge=1, le=10_000)  # None: samples per publish
    # IEC 60870-5-104 (gateway/inputs/iec104/README.md): timers and windows default to the
    # standard's; port defaults to 2404
    common_address: int = Field(default=1, ge=1, le=65534)
    t0: Seconds = Field(default=30.0, ge=0.1, le=255)
    t1: Seconds = Field(default=15.0, ge=0.1, le=255)
    t2: Seconds = Field(default=10.0, ge=0.05, le=255)
    t3: Seconds = Field(default=20.0, ge=0.1, le=172_800)
    k: int = Field(default=12, ge=1, le=32767)
    w: int = Field(default=8, ge=1, le=32767)
    interrogation_interval: Seconds = Field(default=15 * MINUTE, ge=0, le=DAY)  # 0: on connect
    counter_interval: Seconds = Field(default=15 * MINUTE, ge=0, le=DAY)  # 0: on connect
    time_zone: str = "UTC"  # of the device's CP56Time2a clock (IANA name)
    # IEC 62351-3: TLS with the station's certificate checked against tls_ca, and our own
    # certificate (tls_cert, tls_key) for the station to check
    tls_ca: FilePath | None = None
    tls_cert: FilePath | None = None
    tls_key: FilePath | None = None

    # DNP3 (gateway/inputs/dnp3/README.md): link addresses; poll_interval is the event (class
    # 1-3) poll's, timeout the response timeout; port defaults to 20000
    master_address: int = Field(default=1, ge=0, le=65519)
    outstation_address: int = Field(default=10, ge=0, le=65519)
    integrity_interval: Seconds = Field(default=HOUR, ge=0, le=DAY)  # 0: on connect only
    unsolicited: bool = True  # enable the outstation's unsolicited responses on connect
    time_sync: bool = True  # set the outstation's clock when it asks (IIN1.4 NEED_TIME)

    @model_validator(mode="before")
    @classmethod
    def _default_port(cls, data: Any) -> Any:
        if isinstance(data, dict) and "port" not in data:
            port = {"iec104": 2404, "dnp3": 20000}.get(str(data.get("protocol")))
            if port is not None:
                return {**data, "port": port}
        return data

    @property
    def bus(self) -> str:
        """What the device shares a connection with: "tcp:host:port", "rtu:/dev/x", endpoint."""
        if self.protocol == "modbus-tcp":
            return f"tcp:{self.host}:{self.port}"
        if self.protocol == "modbus-rtu":
            return f"rtu:{self.serial_port}"
        if self.protocol in ("iec104", "dnp3"):
            return f"{self.protocol}:{self.host}:{self.port}"
        return self.endpoint or ""


def _curve_cells(value: object) -> object:
    """A volume curve's pairs as tuples, from TOML's arrays or a CSV cell ("level volume;
    level volume; ...")."""
    if isinstance(value, list):
        return [tuple(pair) if isinstance(pair, list) else pair for pair in value]
    if not isinstance(value, str):
        return value
    try:
        return [tuple(float(x) for x in pair.replace(":", " ").split())
                for pair in value.split(";") if pair.strip()]
    except ValueError:
        raise PydanticCustomError("volume_curve", f"{value!r} is not a volume curve: write "
                                  "'level volume; level volume; ...', e.g. '0 0; 4 480'"
                                  ) from None


def _rising(curve: list[tuple[float, float]]) -> list[tuple[float, float]]:
    if len(curve) < 2:
        raise PydanticCustomError("volume_curve", "needs at least two [level, volume] pairs")
    levels, volumes = [p[0] for p in curve], [p[1] for p in curve]
    if any(b <= a for a, b in itertools.pairwise(levels)):
        raise PydanticCustomError("volume_curve", f"levels must rise from pair to pair, got "
                                  f"{levels}")
    if min(volumes) < 0 or any(b < a for a, b in itertools.pairwise(volumes)):
        raise PydanticCustomError("volume_curve", f"volumes (m3) must be 0 or more and never "
                                  f"fall as the level rises, got {volumes}")
    return curve


# [[level, m3], ...]: a tank's volume at levels in its level point's unit, linear between
VolumeCurve = Annotated[list[tuple[float, float]], BeforeValidator(_curve_cells),
                        AfterValidator(_rising)]


_SHARED_TEXT = ("device", "kind", "unit", "zone", "role", "priority", "register_kind", "type",
                "word_order", "deadband_type", "typeid")


@pydantic_dataclass(config=Strict.model_config, slots=True)
class Point:
    """One measured value. `type` defaults to "bool" in a coil or discrete table, else
    "float32". A bool in a holding or input register occupies that register and reads its bit 0.

    A slotted dataclass, not a model: a site holds one per point, and a model's instance dict
    costs ~1.6 KB (50,000 points: 80 MB) where slots cost ~0.2 KB. `fields_of()` gives its
    keys as a dict, `dataclasses.replace()` a changed copy (validated).
    """

    if TYPE_CHECKING:  # what pydantic's dataclass decorator adds, for mypy
        __pydantic_fields__: ClassVar[dict[str, FieldInfo]]
        __pydantic_validator__: ClassVar[SchemaValidator]

    tag: str = Field(min_length=1, max_length=NAME_MAX)
    device: str | None = None
    kind: PointKind = "other"
    unit: str = ""
    description: str = ""
    zone: str | None = Field(default=None, max_length=NAME_MAX)
    role: Literal["inflow", "outflow"] | None = None
    lo: float | None = None
    hi: float | None = None
    writable: bool = False
    nominal: float | None = Field(default=None, gt=0)  # rated value: voltage, frequency
    priority: Priority | None = None  # of this point's alarms; None: by alarm kind
    # A tank's level point: the tank's geometry, for its zone's water balance (else learned)
    area: float | None = Field(default=None, gt=0)  # m2 of water surface
    volume_curve: VolumeCurve | None = None
    # Modbus
    register_kind: RegisterKind = Field(default="holding", alias="register")
    address: int | None = Field(default=None, ge=0, le=65535)
    type: DataType = "float32"
    word_order: WordOrder = "ABCD"
    scale: Annotated[float, AfterValidator(_not_zero)] = 1.0
    offset: float = 0.0
    # OPC UA (a Modbus point may carry one too, so one file serves both protocols)
    node: str | None = None
    sampling_interval: Seconds | None = Field(default=None, ge=0, le=DAY)  # None: the device's
    queue_size: int | None = Field(default=None, ge=1, le=10_000)  # None: the device's
    deadband_type: Literal["none", "absolute", "percent"] = "none"
    deadband: float = Field(default=0.0, ge=0)  # engineering units, or % of the EURange
    # IEC 60870-5-104: information object address, type (None: any), common address (None:
    # the device's)
    ioa: int | None = Field(default=None, ge=0, le=0xFFFFFF)
    typeid: IecType | None = None
    common_address: int | None = Field(default=None, ge=1, le=65534)
    # DNP3: static group (1, 3, 20, 30: its events arrive as 2, 4, 22, 32), index, the
    # variations the master reads (None: the outstation's default; DNP3_GROUPS)
    group: int | None = None
    index: int | None = Field(default=None, ge=0, le=65535)
    variation: int | None = Field(default=None, ge=0, le=255)
    event_variation: int | None = Field(default=None, ge=1, le=255)

    @model_validator(mode="before")
    @classmethod
    def _bits_are_bool(cls, data: Any) -> Any:
        keys = data.kwargs if isinstance(data, ArgsKwargs) else data  # Point(...) or a table
        if (isinstance(keys, dict) and "type" not in keys
                and keys.get("register", keys.get("register_kind")) in BIT_TABLES):
            keys = {**keys, "type": "bool"}
            return ArgsKwargs(data.args, keys) if isinstance(data, ArgsKwargs) else keys
        return data

    def __post_init__(self) -> None:
        # A site has a few devices, kinds, units and zones: one string each, not one per point.
        for name in _SHARED_TEXT:
            if (value := getattr(self, name)) is not None:
                object.__setattr__(self, name, sys.intern(value))

    @property
    def width(self) -> int:
        """Registers (or bits, in a coil/discrete table) the value occupies."""
        return 1 if self.register_kind in BIT_TABLES else REGISTER_WIDTH[self.type]


class Site(Strict):
    site: SiteSection
    historian: HistorianSection = HistorianSection()
    spool: SpoolSection = SpoolSection()
    api: ApiSection = ApiSection()
    anomaly: AnomalySection = AnomalySection()
    alarms: AlarmsSection = AlarmsSection()
    devices: list[Device] = []
    points: list[Point] = []
    webhooks: list[Webhook] = []
    northbound: list[Northbound] = []

    def device(self, name: str) -> Device:
        return next(d for d in self.devices if d.name == name)


def keys_of(model: type[BaseModel] | type[Point]) -> list[str]:
    """The keys a table of `model` accepts (the alias where one is set)."""
    fields = model.model_fields if issubclass(model, BaseModel) else model.__pydantic_fields__
    return [f.alias or name for name, f in fields.items()]


def fields_of(point: Point, names: Collection[str] | None = None) -> dict[str, Any]:
    """`point`'s fields (those in `names`, if given) by name."""
    return {name: getattr(point, name) for name in point.__pydantic_fields__
            if names is None or name in names}
