"""Reading a site file: TOML and point CSV into the models, every problem reported at once.

`load_site()` reports every problem at once as a `ConfigError`, each naming the file, the key
path (`points[12].word_order`, or `row 14, column word_order` for a point from the CSV) and the
reason. TOML values must have their type (`address = 5`, not `"5"`); CSV cells are text and are
converted (`12`, `TRUE`, `1.5`). Cross-field rules live in `gateway.site.rules`.
"""

from __future__ import annotations

import functools
import json
import re
import ssl
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ValidationError,
)
from pydantic_core import PydanticCustomError

from gateway.site import point_csv
from gateway.site.model import (
    AlarmsSection,
    AnomalySection,
    ApiSection,
    Device,
    HistorianSection,
    Northbound,
    Point,
    Site,
    SiteSection,
    SpoolSection,
    Strict,
    Webhook,
    as_path,
    describe,
    keys_of,
)
from gateway.site.rules import RULE_KEYS, check_site
from gateway.site.suggest import did_you_mean


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
_ARRAYS: dict[str, type[BaseModel] | type[Point]] = {
    "devices": Device, "points": Point, "webhooks": Webhook, "northbound": Northbound}
_DECIMAL_COMMA = re.compile(r"[+-]?\d*,\d+")


def key_path(loc: tuple[str | int, ...]) -> str:
    """("points", 12, "word_order") -> "points[12].word_order"."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


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


def _csv_origin(shown: str, number: int) -> _Origin:
    return _Origin(shown, f"row {number}", f"{Path(shown).name} row {number}", (1, number, 0),
                   csv=True)


class _Array:
    """An array's tables as validated, in reading order (the TOML's, then the CSV's rows), and
    where each came from, made only when a message needs it. An origin object per point,
    made beside each point and freed after the load, left the points of a large site spread
    over half-empty memory pages that the process kept: 15 MB at 50,000 points."""

    def __init__(self, toml: str, key: str, rank: int) -> None:
        self.values: list[Any] = []
        self._toml, self._key, self._rank = toml, key, rank
        self._csv = ""
        self._rows: list[int] = []  # the CSV rows' numbers ...
        self._first_row = -1  # ... from this index on (-1: none)

    def origin(self, i: int) -> _Origin:
        if 0 <= self._first_row <= i:
            return _csv_origin(self._csv, self._rows[i - self._first_row])
        return _Origin(self._toml, f"{self._key}[{i}]", f"{self._key}[{i}]", (0, self._rank, i))

    def add_row(self, shown: str, number: int, value: Any) -> None:
        if self._first_row < 0:
            self._csv, self._first_row = shown, len(self.values)
        self._rows.append(number)
        self.values.append(value)

    def __iter__(self) -> Iterator[tuple[Any, _Origin]]:
        return ((v, self.origin(i)) for i, v in enumerate(self.values))


class _Problems:
    def __init__(self) -> None:
        self._ranked: list[tuple[tuple[int, int, int], ConfigProblem]] = []

    def add(self, origin: _Origin, loc: tuple[str | int, ...], reason: str) -> None:
        self._ranked.append(
            (origin.rank, ConfigProblem(file=origin.file, key=origin.key(loc), reason=reason)))

    def raise_any(self) -> None:
        if self._ranked:
            raise ConfigError([p for _, p in sorted(self._ranked, key=lambda r: r[0])])



def _reason(err: Any, model: type[BaseModel] | type[Point], csv: bool) -> str:
    """Pydantic's message for one error, reworded where it would leave a reader guessing."""
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    got = describe(value)
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        return "unknown key" + did_you_mean(str(err["loc"][-1]), keys_of(model))
    if kind == "missing":
        return "required, but the cell is empty" if csv else "required key is missing"
    if kind == "literal_error":
        allowed = ctx["expected"]
        hint = did_you_mean(value, allowed.replace("'", "").replace(" or ", ", ").split(
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
    if kind == "string_too_long":
        return f"must be at most {ctx['max_length']} characters, got {len(value)}"
    bounds = {"greater_than_equal": ("at least", "ge"), "greater_than": ("greater than", "gt"),
              "less_than_equal": ("at most", "le"), "less_than": ("less than", "lt")}
    if kind in bounds:
        words, name = bounds[kind]
        bound = ctx[name]
        if isinstance(bound, float) and bound.is_integer():
            bound = int(bound)  # 60 s, not 60.0 or 2.592e+06
        return f"must be {words} {bound}, got {got}"
    if kind in ("model_type", "model_attributes_type", "dict_type", "dataclass_type",
                "dataclass_exact_type"):
        return f"expected a table, got {got}"
    return str(err["msg"])


def _validated(model: type[BaseModel] | type[Point], data: object, strict: bool) -> Any:
    if issubclass(model, BaseModel):
        return model.model_validate(data, strict=strict)
    if not strict:
        return Point.__pydantic_validator__.validate_python(data)
    # Strict from Python would want a Point instance; JSON carries TOML's types (a date only
    # as its text, which no point key takes but as a name). The strings come out new and
    # shared among points (pydantic's string cache), so the parsed file's are all freed.
    return Point.__pydantic_validator__.validate_json(
        json.dumps(data, default=lambda v: v.isoformat()), strict=True)


def _validate(model: type[BaseModel] | type[Point], data: object,
              origin: _Origin | Callable[[], _Origin], problems: _Problems,
              csv: bool = False) -> Any:
    """`model` validated from `data`; if invalid, its problems are added (at `origin`, or
    what it returns), and the return is the entry without its faulty keys when the
    cross-field rules can still judge it, else None."""
    # TOML values carry their types, CSV cells are text to convert.
    strict = not csv
    try:
        return _validated(model, data, strict)
    except ValidationError as e:
        errors = e.errors()
    if not isinstance(origin, _Origin):
        origin = origin()
    for err in errors:
        problems.add(origin, err["loc"], _reason(err, model, csv))
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
    except RecursionError:  # tomllib parses nested arrays and inline tables recursively
        raise fail("invalid TOML: arrays or inline tables nested too deeply") from None


def _read_csv(path: Path, shown: str, problems: _Problems, site_origin: _Origin,
              points: _Array) -> None:
    """The CSV's points added to `points` in row order (None where invalid)."""
    try:
        rows, found = point_csv.read_rows(path, keys_of(Point))
    except OSError as e:
        problems.add(site_origin, ("points_csv",), f"{shown}: {_os_reason(e)}")
        return
    for number, key, reason in found:
        problems.add(_Origin(shown, key, "", rank=(1, number, 0), csv=True), (), reason)
    for number, row in rows:
        points.add_row(shown, number, _validate(
            Point, row, functools.partial(_csv_origin, shown, number), problems, csv=True))


def _tls(api: ApiSection, base: Path, origin: _Origin, problems: _Problems) -> ApiSection:
    """`api` with its certificate and key resolved against the site file's folder, after
    checking that they come together and load (so check-config finds a wrong pair)."""
    paths = {k: base / v for k in ("tls_cert", "tls_key") if (v := getattr(api, k)) is not None}
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


def _not_a_directory(path: Path) -> str | None:
    """Why `path` cannot be (or become) a directory: it, or the first of its parents that
    exists, is something else. Whether it is writable is for the commands that write there
    (`check-config` may run as another user than the service)."""
    for folder in (path, *path.parents):
        if folder.exists():
            if folder.is_dir():
                return None
            what = "a file" if folder.is_file() else "not a directory"
            return f"{folder} is {what}, not a directory" if folder == path else (
                f"{folder} (in {path}) is {what}, not a directory")
    return None


def load_site(path: str | Path, *, read_points_csv: bool = True) -> Site:
    """Read and validate a site file and its `points_csv` (unless `read_points_csv` is false:
    for a command that writes that file); raise `ConfigError` listing every problem. Relative
    `data_dir`, `points_csv`, `tls_cert` and `tls_key` (of [api] and of devices, with a
    device's `tls_ca`) are resolved against the site file's folder."""
    path = Path(path)
    toml = str(path)
    raw = _read_toml(path)
    problems = _Problems()

    top = _Origin(toml, "", "", (0, 0, 0))
    known = [*_SECTIONS, *_ARRAYS]
    for key in raw:
        if key not in known:
            problems.add(top, (key,), "unknown key" + did_you_mean(key, known))
    if "site" not in raw:
        problems.add(top, ("site",), "required table [site] is missing")
    origins = {key: _Origin(toml, key, key, (0, 1 + k, 0)) for k, key in enumerate(_SECTIONS)}
    sections = {key: _validate(model, raw[key], origins[key], problems)
                for key, model in _SECTIONS.items() if key in raw}

    located: dict[str, _Array] = {}
    for k, (key, model) in enumerate(_ARRAYS.items(), start=len(_SECTIONS) + 1):
        items = raw.get(key, [])
        if not isinstance(items, list):
            problems.add(top, (key,), f"expected an array of tables ([[{key}]]), "
                                      f"got {describe(items)}")
            items = []
        array = located[key] = _Array(toml, key, k)
        array.values.extend(_validate(model, item, functools.partial(array.origin, i), problems)
                            for i, item in enumerate(items))

    base = path.absolute().parent
    csv_name = raw["site"].get("points_csv") if isinstance(raw.get("site"), dict) else None
    try:  # read even when [site] has faults: report the CSV's too
        csv = as_path(csv_name) if isinstance(csv_name, str) else None
    except PydanticCustomError:  # reported as [site]'s
        csv = None
    if csv is not None and read_points_csv:
        _read_csv(base / csv, str(path.parent / csv), problems, origins["site"],
                  located["points"])

    device_files = ("tls_ca", "tls_cert", "tls_key")
    devices = [d if d is None else d.model_copy(update={
        k: base / v for k in device_files if (v := getattr(d, k)) is not None})
        for d in located["devices"].values]
    points = located["points"].values
    for section, index, field, reason in check_site(
            sections.get("historian") or HistorianSection(), devices, points,
            lambda s, i: located[s].origin(i).label):
        origin = origins[section] if index < 0 else located[section].origin(index)
        problems.add(origin, (field,), reason)
    named: dict[str, int] = {}
    for i, (hook, origin) in enumerate(located["webhooks"]):
        if hook is not None and named.setdefault(hook.key, i) != i:
            problems.add(origin, ("name",), f"{hook.key!r} is webhooks[{named[hook.key]}]'s "
                         "name (or host) too: give each webhook its own name")
    if sections.get("api") is not None:
        sections["api"] = _tls(sections["api"], base, origins["api"], problems)
    if sections.get("site") is not None:
        head: SiteSection = sections["site"]
        sections["site"] = head = head.model_copy(update={
            k: base / v for k in ("data_dir", "points_csv") if (v := getattr(head, k)) is not None})
        if (why := _not_a_directory(head.data_dir)) is not None:
            problems.add(origins["site"], ("data_dir",), why)
    problems.raise_any()

    return Site(site=sections["site"], **{
        k: v for k, v in sections.items() if k != "site"},
        devices=[d for d in devices if d is not None],  # all are, past raise_any()
        points=points,
        webhooks=located["webhooks"].values,
        northbound=[n.resolved(base) for n in located["northbound"].values])
