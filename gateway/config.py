"""The site file: pydantic models of DESIGN.md's TOML keys, and the loader.

`load_site()` reports every problem at once as a `ConfigError`, each naming the file, the key
path (`points[12].word_order`, or `row 14, column word_order` for a point from the CSV) and the
reason. TOML values must have their type (`address = 5`, not `"5"`); CSV cells are text and are
converted (`12`, `TRUE`, `1.5`). Cross-field rules live in `gateway.site_checks`.
"""

from __future__ import annotations

import json
import re
import ssl
import sys
import tomllib
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic.dataclasses import dataclass as pydantic_dataclass
from pydantic_core import ArgsKwargs, PydanticCustomError

from anomaly.alarms import PRIORITIES, AlarmKind, Priority
from gateway import point_csv
from gateway.site_checks import BIT_TABLES, RULE_KEYS, check_site

Protocol = Literal["modbus-tcp", "modbus-rtu", "opcua"]
PointKind = Literal[
    "pressure", "flow", "level", "status", "voltage", "current", "frequency", "power",
    "temperature", "other",
]
RegisterKind = Literal["holding", "input", "coil", "discrete"]
DataType = Literal["bool", "int16", "uint16", "int32", "uint32", "int64", "float32", "float64"]
WordOrder = Literal["ABCD", "CDAB", "BADC", "DCBA"]

# Registers a value occupies in a holding/input table (a coil or discrete input is one bit).
_ORIGIN = re.compile(r"https?://(\[[0-9A-Fa-f:.]+\]|[^/\s:\[\]]+)(:\d{1,5})?")

REGISTER_WIDTH: dict[str, int] = {"bool": 1, "int16": 1, "uint16": 1, "int32": 2, "uint32": 2,
                                  "float32": 2, "int64": 4, "float64": 4}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True,
                              allow_inf_nan=False)


class SiteSection(Strict):
    name: str = Field(min_length=1)
    data_dir: Path = Path("./scadawatch-data")
    points_csv: Path | None = None


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
    batch_size: int = Field(default=5000, ge=1)  # lines per write request
    flush_interval: float = Field(default=1.0, gt=0)  # seconds a caught-up sink gathers readings
    max_rate: float = Field(default=200_000.0, gt=0)  # readings/s of backlog in a catch-up
    timeout: float = Field(default=10.0, gt=0)  # seconds per request
    gzip: bool | None = None  # None: compress unless the URL is a loopback address
    # Also write these timestamps as integer fields (ns): "server" -> server_ts, "gateway" ->
    # gateway_ts. The point's time is always the source time; the others cost the database
    # a field series per point each, so they are written only when asked for.
    timestamp_fields: list[Literal["server", "gateway"]] = []


class SpoolSection(Strict):
    max_bytes: int = Field(default=1 << 30, gt=0)  # bound on disk use
    max_age: float = Field(default=7 * 86400.0, gt=0)  # seconds; older segments are dropped
    segment_bytes: int = Field(default=16 << 20, gt=0)
    fsync_interval: float = Field(default=1.0, ge=0)  # 0: fsync every batch


class AnomalySection(Strict):
    """The anomaly engine (`anomaly.engine.EngineSettings`): delays in seconds per alarm kind
    override the defaults of `anomaly/alarms.py`."""

    enabled: bool = True
    interval: float = Field(default=60.0, gt=0)  # seconds per detector tick
    lateness: float = Field(default=2.0, ge=0)  # seconds a tick waits for late readings
    disable: list[AlarmKind] = []
    on_delay: dict[AlarmKind, float] = {}
    off_delay: dict[AlarmKind, float] = {}
    priority: dict[AlarmKind, Priority] = {}
    river: bool = True  # zone-level multivariate detector, when the `ml` extra is installed
    save_interval: float = Field(default=300.0, gt=0)  # seconds between state saves


class AlarmsSection(Strict):
    """Alarm-system KPIs (EEMUA 191) and operator limits."""

    window: float = Field(default=600.0, gt=0)  # seconds over which alarm rates are counted
    flood_start: int = Field(default=10, ge=1)  # a flood starts above this many per window
    flood_end: int = Field(default=5, ge=1)  # ... and ends below this many
    chatter_count: int = Field(default=3, ge=2)  # raises of one condition within
    chatter_window: float = Field(default=60.0, gt=0)  # this many seconds: chattering
    stale_after: float = Field(default=86400.0, gt=0)  # seconds active: a stale alarm
    max_shelve: float = Field(default=86400.0, gt=0)  # seconds an operator may shelve for

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
    name: str | None = Field(default=None, min_length=1)  # its outbox cursor; default: url
    min_priority: Priority = "low"
    priorities: list[Priority] | None = None  # exactly these (instead of min_priority)
    secret_env: str | None = Field(default=None, min_length=1)
    timeout: float = Field(default=10.0, gt=0)  # seconds per request
    retry_initial: float = Field(default=1.0, gt=0)  # seconds before the first retry,
    retry_max: float = Field(default=300.0, gt=0)  # doubling up to this

    @model_validator(mode="after")
    def _one_priority_rule(self) -> Webhook:
        if self.priorities is not None and "min_priority" in self.model_fields_set:
            raise PydanticCustomError("priority_rule", "give min_priority or priorities, "
                                      "not both")
        return self

    @property
    def key(self) -> str:
        return self.name or self.url

    def accepts(self, priority: str) -> bool:
        if self.priorities is not None:
            return priority in self.priorities
        return PRIORITIES.index(priority) >= PRIORITIES.index(self.min_priority)


def _path(value: object) -> object:
    # TOML has no path type: a path is text (strict validation would refuse text for a Path).
    if isinstance(value, str):
        return Path(value)
    raise PydanticCustomError("path_type", f"expected a file path (text), got {_show(value)}")


FilePath = Annotated[Path, BeforeValidator(_path)]


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
    name: str = Field(min_length=1)
    protocol: Protocol
    poll_interval: float = Field(default=1.0, gt=0)
    timeout: float = Field(default=1.0, gt=0)
    retries: int = Field(default=1, ge=0)
    stale_after: int = Field(default=3, ge=1)  # poll intervals without an update -> stale
    # Modbus TCP
    host: str = "127.0.0.1"
    port: int = Field(default=502, ge=1, le=65535)
    unit: int = Field(default=1, ge=0, le=255)
    connections: int = Field(default=1, ge=1, le=16)
    # Modbus RTU
    serial_port: str | None = None
    baudrate: int = Field(default=19200, gt=0)
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    # Modbus request planning
    max_registers: int = Field(default=125, ge=1, le=125)
    max_bits: int = Field(default=2000, ge=1, le=2000)
    max_gap: int = Field(default=0, ge=0)  # unused registers a request may span to merge
    pause: float = Field(default=0.0, ge=0)  # seconds between requests on the bus
    # OPC UA
    endpoint: str | None = None
    security_policy: str = "None"
    security_mode: Literal["None", "Sign", "SignAndEncrypt"] = "None"
    username: str | None = None
    password_env: str | None = None
    mode: Literal["subscribe", "poll"] = "subscribe"
    publishing_interval: float | None = Field(default=None, gt=0)  # seconds; None: poll_interval
    # Defaults of the device's points (seconds; 0 asks the server's fastest rate).
    sampling_interval: float | None = Field(default=None, ge=0)  # None: publishing interval
    queue_size: int | None = Field(default=None, ge=1)  # None: samples per publishing interval
    password_file: str | None = None  # a path; str because devices validate strictly

    @property
    def bus(self) -> str:
        """What the device shares a connection with: "tcp:host:port", "rtu:/dev/x", endpoint."""
        if self.protocol == "modbus-tcp":
            return f"tcp:{self.host}:{self.port}"
        if self.protocol == "modbus-rtu":
            return f"rtu:{self.serial_port}"
        return self.endpoint or ""


_SHARED_TEXT = ("device", "kind", "unit", "zone", "role", "priority", "register_kind", "type",
                "word_order", "deadband_type")


@pydantic_dataclass(config=Strict.model_config, slots=True)
class Point:
    """One measured value. `type` defaults to "bool" in a coil or discrete table, else
    "float32". A bool in a holding or input register occupies that register and reads its bit 0.

    A slotted dataclass, not a model: a site holds one per point, and a model's instance dict
    costs ~1.6 KB (50,000 points: 80 MB) where slots cost ~0.2 KB. `fields_of()` gives its
    keys as a dict, `dataclasses.replace()` a changed copy (validated).
    """

    tag: str = Field(min_length=1)
    device: str | None = None
    kind: PointKind = "other"
    unit: str = ""
    description: str = ""
    zone: str | None = None
    role: Literal["inflow", "outflow"] | None = None
    lo: float | None = None
    hi: float | None = None
    writable: bool = False
    nominal: float | None = Field(default=None, gt=0)  # rated value: voltage, frequency
    priority: Priority | None = None  # of this point's alarms; None: by alarm kind
    # Modbus
    register_kind: RegisterKind = Field(default="holding", alias="register")
    address: int | None = Field(default=None, ge=0, le=65535)
    type: DataType = "float32"
    word_order: WordOrder = "ABCD"
    scale: float = 1.0
    offset: float = 0.0
    # OPC UA (a Modbus point may carry one too, so one file serves both protocols)
    node: str | None = None
    sampling_interval: float | None = Field(default=None, ge=0)  # None: the device's
    queue_size: int | None = Field(default=None, ge=1)  # None: the device's
    deadband_type: Literal["none", "absolute", "percent"] = "none"
    deadband: float = Field(default=0.0, ge=0)  # engineering units, or % of the EURange

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

    def device(self, name: str) -> Device:
        return next(d for d in self.devices if d.name == name)


class ConfigProblem(BaseModel):
    file: str
    key: str  # key path such as "points[12].word_order"; "" for the whole file
    reason: str

    def __str__(self) -> str:
        where = f"{self.file}: {self.key}" if self.key else self.file
        return f"{where}: {self.reason}"


class ConfigError(Exception):
    """Every problem found in a site file, each naming file, key path and reason."""

    def __init__(self, problems: list[ConfigProblem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))



_SECTIONS: dict[str, type[Strict]] = {"site": SiteSection, "historian": HistorianSection,
                                      "spool": SpoolSection, "api": ApiSection,
                                      "anomaly": AnomalySection, "alarms": AlarmsSection}
_ARRAYS: dict[str, type[Strict]] = {"devices": Device, "points": Point, "webhooks": Webhook}
_DECIMAL_COMMA = re.compile(r"[+-]?\d*,\d+")


def key_path(loc: tuple[str | int, ...]) -> str:
    """("points", 12, "word_order") -> "points[12].word_order"."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def keys_of(model: type[BaseModel] | type[Point]) -> list[str]:
    """The keys a table of `model` accepts (the alias where one is set)."""
    fields = model.__pydantic_fields__ if model is Point else model.model_fields
    return [f.alias or name for name, f in fields.items()]


def fields_of(point: Point, names: Collection[str] | None = None) -> dict[str, Any]:
    """`point`'s fields (those in `names`, if given) by name."""
    return {name: getattr(point, name) for name in point.__pydantic_fields__
            if names is None or name in names}


@dataclass(frozen=True, slots=True)
class _Origin:
    """Where a table came from (`points[3]` of the TOML file, row 5 of the CSV), and its rank in
    reading order, so that the report reads from top to bottom."""

    file: str
    prefix: str
    label: str  # how other messages name it
    rank: tuple[int, int, int]
    csv: bool = False

    def key(self, loc: tuple[str | int, ...]) -> str:
        if not loc:
            return self.prefix
        if self.csv:
            return f"{self.prefix}, column {key_path(loc)}"
        return key_path((self.prefix, *loc)) if self.prefix else key_path(loc)


class _Problems:
    def __init__(self) -> None:
        self._ranked: list[tuple[tuple[int, int, int], ConfigProblem]] = []

    def add(self, origin: _Origin, loc: tuple[str | int, ...], reason: str) -> None:
        self._ranked.append(
            (origin.rank, ConfigProblem(file=origin.file, key=origin.key(loc), reason=reason)))

    def raise_any(self) -> None:
        if self._ranked:
            raise ConfigError([p for _, p in sorted(self._ranked, key=lambda r: r[0])])


def _show(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return repr(value) if isinstance(value, str) else str(value)


def _reason(err: Any, model: type[BaseModel] | type[Point], csv: bool) -> str:
    """Pydantic's message for one error, reworded where it would leave a reader guessing."""
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    got = _show(value)
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        return "unknown key" + point_csv.suggest(str(err["loc"][-1]), keys_of(model))
    if kind == "missing":
        return "required, but the cell is empty" if csv else "required key is missing"
    if kind == "literal_error":
        allowed = ctx["expected"]
        hint = point_csv.suggest(value, allowed.replace("'", "").replace(" or ", ", ").split(
            ", ")) if isinstance(value, str) else ""
        return f"{got} is not allowed: use {allowed}{hint}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"expected a whole number, got {got}"
    if kind in ("float_type", "float_parsing"):
        comma = isinstance(value, str) and _DECIMAL_COMMA.fullmatch(value)
        return f"expected a number, got {got}" + (
            " (use a dot as the decimal separator)" if comma else "")
    if kind == "finite_number":
        return f"must be a finite number, got {got}"
    if kind in ("bool_type", "bool_parsing"):
        return f"expected true or false, got {got}"
    if kind == "string_type":
        return f"expected text, got {got}"
    if kind == "string_too_short":
        return "must not be empty"
    bounds = {"greater_than_equal": ("at least", "ge"), "greater_than": ("greater than", "gt"),
              "less_than_equal": ("at most", "le"), "less_than": ("less than", "lt")}
    if kind in bounds:
        words, name = bounds[kind]
        return f"must be {words} {ctx[name]}, got {got}"
    if kind in ("model_type", "model_attributes_type", "dict_type", "dataclass_type",
                "dataclass_exact_type"):
        return f"expected a table, got {got}"
    return str(err["msg"])


def _validated(model: type[Strict] | type[Point], data: object, strict: bool) -> Any:
    if model is not Point:
        return model.model_validate(data, strict=strict)
    if not strict:
        return Point.__pydantic_validator__.validate_python(data)
    # Strict from Python would want a Point instance; JSON carries TOML's types (a date only
    # as its text, which no point key takes but as a name). The strings come out new and
    # shared among points (pydantic's string cache), so the parsed file's are all freed.
    return Point.__pydantic_validator__.validate_json(
        json.dumps(data, default=lambda v: v.isoformat()), strict=True)


def _validate(model: type[Strict] | type[Point], data: object, origin: _Origin,
              problems: _Problems) -> Any:
    """`model` validated from `data`; if invalid, its problems are added, and the return is the
    entry without its faulty keys when the cross-field rules can still judge it, else None."""
    # TOML values carry their types, CSV cells are text to convert.
    strict = not origin.csv and model is not SiteSection
    try:
        return _validated(model, data, strict)
    except ValidationError as e:
        errors = e.errors()
    for err in errors:
        problems.add(origin, err["loc"], _reason(err, model, origin.csv))
    faulty = {err["loc"][0] if err["loc"] else "" for err in errors}
    if not isinstance(data, dict) or faulty & RULE_KEYS or "" in faulty:
        return None
    try:
        return _validated(model, {k: v for k, v in data.items() if k not in faulty}, strict)
    except ValidationError:
        return None


def _os_reason(e: OSError) -> str:
    if isinstance(e, FileNotFoundError):
        return "file not found"
    if isinstance(e, IsADirectoryError):
        return "is a directory, not a file"
    if isinstance(e, PermissionError):
        return "permission denied"
    return f"cannot read: {e.strerror or e}"


def _read_toml(path: Path) -> dict[str, Any]:
    def fail(reason: str) -> ConfigError:
        return ConfigError([ConfigProblem(file=str(path), key="", reason=reason)])

    try:
        data = path.read_bytes()
    except OSError as e:
        raise fail(_os_reason(e)) from None
    try:
        text = data.decode("utf-8-sig")  # Windows editors may add a BOM
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise fail(f"not UTF-8 text (byte 0x{data[e.start]:02x} on line {line}); "
                   "save the file as UTF-8") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise fail(f"invalid TOML: {e}") from None


def _read_csv(path: Path, shown: str, problems: _Problems,
              site_origin: _Origin) -> list[tuple[Point | None, _Origin]]:
    """The CSV's points in row order (None where invalid) with their origins."""
    try:
        rows, found = point_csv.read_rows(path, keys_of(Point))
    except OSError as e:
        problems.add(site_origin, ("points_csv",), f"{shown}: {_os_reason(e)}")
        return []
    for number, key, reason in found:
        problems.add(_Origin(shown, key, "", rank=(1, number, 0), csv=True), (), reason)
    name = Path(shown).name
    out = []
    for number, row in rows:
        origin = _Origin(shown, f"row {number}", f"{name} row {number}", (1, number, 0), csv=True)
        out.append((_validate(Point, row, origin, problems), origin))
    return out


def _tls(api: ApiSection, base: Path, origin: _Origin, problems: _Problems) -> ApiSection:
    """`api` with its certificate and key resolved against the site file's folder, after
    checking that they come together and load (so check-config finds a wrong pair)."""
    paths = {k: base / v.expanduser() for k in ("tls_cert", "tls_key")
             if (v := getattr(api, k)) is not None}
    if len(paths) == 1:
        (given,) = paths
        missing = "tls_key" if given == "tls_cert" else "tls_cert"
        problems.add(origin, (missing,), f"required with {given} (HTTPS needs both)")
    elif paths:
        for key, file in paths.items():
            if not file.is_file():
                problems.add(origin, (key,), f"{file}: file not found")
        if all(f.is_file() for f in paths.values()):
            try:
                ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
                    paths["tls_cert"], paths["tls_key"], password=lambda: "")  # never prompt
            except (ssl.SSLError, OSError) as e:
                problems.add(origin, ("tls_cert",), f"{paths['tls_cert']} and "
                             f"{paths['tls_key']} do not load as a PEM certificate and its "
                             f"unencrypted private key: {getattr(e, 'reason', None) or e}")
    return api.model_copy(update=paths)


def load_site(path: str | Path) -> Site:
    """Read and validate a site file and its `points_csv`; raise `ConfigError` listing every
    problem. Relative `data_dir`, `points_csv`, `tls_cert` and `tls_key` are resolved against
    the site file's folder."""
    path = Path(path)
    toml = str(path)
    raw = _read_toml(path)
    problems = _Problems()

    top = _Origin(toml, "", "", (0, 0, 0))
    known = [*_SECTIONS, *_ARRAYS]
    for key in raw:
        if key not in known:
            problems.add(top, (key,), "unknown key" + point_csv.suggest(key, known))
    if "site" not in raw:
        problems.add(top, ("site",), "required table [site] is missing")
    origins = {key: _Origin(toml, key, key, (0, 1 + k, 0)) for k, key in enumerate(_SECTIONS)}
    sections = {key: _validate(model, raw[key], origins[key], problems)
                for key, model in _SECTIONS.items() if key in raw}

    located: dict[str, list[tuple[Any, _Origin]]] = {}
    for k, (key, model) in enumerate(_ARRAYS.items(), start=len(_SECTIONS) + 1):
        items = raw.get(key, [])
        if not isinstance(items, list):
            problems.add(top, (key,), f"expected an array of tables ([[{key}]]), "
                                      f"got {_show(items)}")
            items = []
        located[key] = []
        for i, item in enumerate(items):
            origin = _Origin(toml, f"{key}[{i}]", f"{key}[{i}]", (0, k, i))
            located[key].append((_validate(model, item, origin, problems), origin))

    base = path.absolute().parent
    csv_name = raw["site"].get("points_csv") if isinstance(raw.get("site"), dict) else None
    if isinstance(csv_name, str):  # read even when [site] has faults: report the CSV's too
        csv = Path(csv_name).expanduser()
        located["points"] += _read_csv(base / csv, str(path.parent / csv), problems,
                                       origins["site"])

    devices = [d for d, _ in located["devices"]]
    points = [p for p, _ in located["points"]]
    for section, index, field, reason in check_site(
            sections.get("historian") or HistorianSection(), devices, points,
            lambda s, i: located[s][i][1].label):
        origin = origins[section] if index < 0 else located[section][index][1]
        problems.add(origin, (field,), reason)
    named: dict[str, int] = {}
    for i, (hook, origin) in enumerate(located["webhooks"]):
        if hook is not None and named.setdefault(hook.key, i) != i:
            problems.add(origin, ("name",), f"{hook.key!r} is webhooks[{named[hook.key]}]'s "
                         "name (or URL) too: give each webhook its own name")
    if sections.get("api") is not None:
        sections["api"] = _tls(sections["api"], base, origins["api"], problems)
    problems.raise_any()

    head: SiteSection = sections["site"]  # a missing or invalid [site] was a problem above
    resolve = {k: base / v.expanduser() for k in ("data_dir", "points_csv")
               if (v := getattr(head, k)) is not None}
    return Site(site=head.model_copy(update=resolve), **{
        k: v for k, v in sections.items() if k != "site"}, devices=devices, points=points,
        webhooks=[w for w, _ in located["webhooks"]])
