"""The site file: pydantic models of DESIGN.md's TOML keys, and the loader.

`load_site()` reports every problem at once as a `ConfigError`, each naming the file, the key
path (`points[12].word_order`) and the reason.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

Protocol = Literal["modbus-tcp", "modbus-rtu", "opcua"]
PointKind = Literal[
    "pressure", "flow", "level", "status", "voltage", "current", "frequency", "power",
    "temperature", "other",
]
RegisterKind = Literal["holding", "input", "coil", "discrete"]
DataType = Literal["bool", "int16", "uint16", "int32", "uint32", "int64", "float32", "float64"]
WordOrder = Literal["ABCD", "CDAB", "BADC", "DCBA"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class SiteSection(Strict):
    name: str = Field(min_length=1)
    data_dir: Path = Path("./scadawatch-data")
    points_csv: Path | None = None


class HistorianSection(Strict):
    kind: Literal["embedded", "influxdb"] = "embedded"
    url: str = "http://127.0.0.1:8086"
    api: Literal["v1", "v2"] = "v2"
    bucket: str = "scada"
    org: str = ""
    token_env: str = "INFLUX_TOKEN"
    database: str = "scada"
    retention_policy: str = ""
    username: str = ""
    password_env: str = "INFLUX_PASSWORD"


class SpoolSection(Strict):
    max_bytes: int = Field(default=1 << 30, gt=0)  # bound on disk use
    max_age: float = Field(default=7 * 86400.0, gt=0)  # seconds; older segments are dropped
    segment_bytes: int = Field(default=16 << 20, gt=0)
    fsync_interval: float = Field(default=1.0, ge=0)  # 0: fsync every batch


class ApiSection(Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)


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


class Point(Strict):
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
    # Modbus
    register_kind: RegisterKind = Field(default="holding", alias="register")
    address: int | None = Field(default=None, ge=0, le=65535)
    type: DataType = "float32"
    word_order: WordOrder = "ABCD"
    scale: float = 1.0
    offset: float = 0.0
    # OPC UA
    node: str | None = None


class Site(Strict):
    site: SiteSection
    historian: HistorianSection = HistorianSection()
    spool: SpoolSection = SpoolSection()
    api: ApiSection = ApiSection()
    devices: list[Device] = []
    points: list[Point] = []

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


def key_path(loc: tuple[str | int, ...]) -> str:
    """("points", 12, "word_order") -> "points[12].word_order"."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def load_site(path: str | Path) -> Site:
    """Read and validate a site file; raise `ConfigError` listing every problem."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError([ConfigProblem(file=str(path), key="", reason="file not found")])
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([ConfigProblem(file=str(path), key="", reason=f"invalid TOML: {e}")])
    try:
        site = Site.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(
            [ConfigProblem(file=str(path), key=key_path(err["loc"]), reason=err["msg"])
             for err in e.errors()]
        ) from None
    return site
