"""`scadawatch check-config` over the site files in tests/cases/config/, and the loaded `Site`.

Each case folder holds `site.toml` (maybe a `points.csv`) and `expected.txt`: lines that must
appear in the output, `{dir}` standing for the folder. Folders named `valid-*` must pass
(exit 0, summary on stdout); the others must fail (exit 2, problems on stderr, ending with the
problem count, so a spurious extra problem fails the case too).
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.site.loader import load_site
from gateway.site.model import HistorianSection, Point
from scadawatch.cli import EXIT_OK, EXIT_USAGE

ROOT = Path(__file__).resolve().parents[3]
CASES = ROOT / "tests" / "cases" / "config"
EXAMPLES = ROOT / "examples"


def expected_lines(case: Path) -> list[str]:
    text = (case / "expected.txt").read_text(encoding="utf-8")
    return [line.replace("{dir}", str(case)) for line in text.splitlines() if line.strip()]


def missing_lines(case: Path, output: str) -> list[str]:
    printed = set(output.splitlines())
    return [line for line in expected_lines(case) if line not in printed]


@pytest.mark.parametrize("case", sorted(p for p in CASES.iterdir() if p.is_dir()),
                         ids=lambda p: p.name)
def test_check_config_case(case: Path, cli) -> None:
    code, out, err = cli("check-config", "--config", case / "site.toml")
    valid = case.name.startswith("valid-")
    assert code == (EXIT_OK if valid else EXIT_USAGE), out + err
    output = out if valid else err
    assert not missing_lines(case, output), f"missing:\n{missing_lines(case, output)}\n" \
                                            f"output:\n{output}"


@pytest.mark.parametrize("config", [
    CASES / "many-errors" / "site.toml",
    CASES / "toml-not-utf8" / "site.toml",
    CASES / "toml-nested-too-deep" / "site.toml",
    CASES / "paths-unknown-user" / "site.toml",
    CASES / "paths-nul-byte" / "site.toml",
    CASES / "data-dir-is-a-file" / "site.toml",
    CASES,  # a directory given as the file
    CASES / "no-such-site.toml",
], ids=["many-errors", "not-utf8", "nested-too-deep", "unknown-user", "nul-byte",
        "data-dir-is-a-file", "directory", "missing"])
def test_command_exits_2_without_traceback(config: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "scadawatch", "check-config", "--config", str(config)],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == EXIT_USAGE
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert lines and all(line.startswith(str(config.parent)) for line in lines)  # names a file
    if config.name == "site.toml":
        assert not missing_lines(config.parent, proc.stderr)


@pytest.mark.parametrize(("path", "name"), [
    (EXAMPLES / "site.toml", "riverside-water"),
    (ROOT / "gateway" / "inputs" / "modbus" / "sample.toml", "modbus-sample"),
    (ROOT / "gateway" / "inputs" / "opcua" / "sample.toml", "opcua-sample"),
], ids=["examples", "modbus-plugin", "opcua-plugin"])
def test_shipped_example_passes(cli, path: Path, name: str) -> None:
    code, out, err = cli("check-config", "--config", path)
    assert (code, err) == (EXIT_OK, "")
    assert f"site: {name}" in out.splitlines()


def test_loaded_site_from_toml_and_csv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # paths resolve against the site file's folder, not the cwd
    site = load_site(CASES / "valid-toml-and-csv" / "site.toml")
    assert site.site.data_dir == CASES / "valid-toml-and-csv" / "data"
    # The TOML's points first, then the CSV's rows in order (a point's index is its position).
    assert [p.tag for p in site.points] == [
        "dma1.inlet.flow", "feeder1.voltage", "dma1.inlet.pressure", "dma1.pump1.running",
        "dma1.tank.level", "dma1.night.flow"]
    pressure, running, level, night = site.points[2:]
    assert (pressure.address, pressure.word_order, pressure.scale) == (2, "CDAB", 1.0)
    assert (running.register_kind, running.type, running.writable) == ("coil", "bool", True)
    assert (level.type, level.scale, level.writable, level.width) == ("int16", 0.01, False, 1)
    assert (night.device, night.address) == (None, None)
    with pytest.raises(ValidationError):
        site.site.name = "renamed"  # type: ignore[misc]


@pytest.mark.parametrize(("keys", "type_"), [
    ({}, "float32"), ({"register": "coil"}, "bool"), ({"register_kind": "discrete"}, "bool"),
    ({"register": "coil", "type": "uint16"}, "uint16"), ({"register": "input"}, "float32")])
def test_a_point_in_a_bit_table_is_bool_unless_typed_made_in_code_or_read(
        keys: dict, type_: str) -> None:
    assert Point(tag="t", **keys).type == type_
    assert Point.__pydantic_validator__.validate_python({"tag": "t", **keys}).type == type_


@pytest.mark.parametrize(("keys", "flush"), [
    ({}, 10.0), ({"kind": "embedded"}, 10.0),
    # InfluxDB over the network: its latest value a poll old, not ten (the peer harness
    # judges keeping up on values stored 3 s after their window)
    ({"kind": "influxdb", "database": "scada"}, 1.0),
    ({"kind": "influxdb", "database": "scada", "flush_interval": "30s"}, 30.0)])
def test_the_historian_gathers_readings_for_its_kinds_flush_interval(
        keys: dict, flush: float) -> None:
    assert HistorianSection.model_validate(keys).flush_interval == flush


def test_a_point_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Point(tag="t").tag = "u"  # type: ignore[misc]


def test_spreadsheet_csv_reads_like_plain_csv() -> None:
    """BOM, CRLF, padded cells, blank rows and trailing empty columns change nothing."""
    site = load_site(CASES / "valid-csv-bom-crlf" / "site.toml")
    assert [(p.tag, p.register_kind, p.address, p.writable, p.lo, p.hi) for p in site.points] == [
        ("dma1.inlet.flow", "holding", 0, False, 0.0, 500.0),
        ("dma1.pump1.start", "coil", 3, True, None, None),
        ("dma1.tank.level", "input", 7, False, -1.0, 6.0)]
