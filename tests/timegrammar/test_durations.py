"""One duration grammar everywhere: the API, the command line, scenario files and site files
read `500ms`, `30s`, `10m`/`10min` (minutes), `1h30m`, `7d`, `1w` alike, and refuse the same
texts with a message naming them (DESIGN.md, conventions)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from api.times import parse_time
from gateway.site.loader import ConfigError, load_site
from scadawatch.cli import build_parser, duration
from simulators.scenario import parse_duration as scenario_seconds
from timegrammar import NS, DurationError, parse_duration

SPELLINGS = [
    ("500ms", 0.5), ("30s", 30.0), ("10m", 600.0), ("10min", 600.0), ("1h30m", 5400.0),
    ("1h 30min", 5400.0), ("7d", 604800.0), ("1w", 604800.0), ("1.5h", 5400.0), ("90", 90.0),
    ("2d 6h", 194400.0),
]
REFUSED = ["", "m", "10x", "10M", "1e3s", "-5s", "10 minutes", "9" * 400 + "d", "1h 30"]


def site_file(tmp_path: Path, value: str) -> Path:
    path = tmp_path / "site.toml"
    # a key whose range (0 s to 7 days) takes every spelling above
    path.write_text(f'[site]\nname = "t"\n[anomaly.on_delay]\nlimit = "{value}"\n')
    return path


def cli_seconds(value: str) -> float:
    args = build_parser().parse_args(["demo", "--duration", value])
    return args.duration


@pytest.mark.parametrize(("text", "seconds"), SPELLINGS)
def test_every_reader_takes_the_same_spelling(tmp_path: Path, text: str, seconds: float) -> None:
    now = 10**18
    assert parse_duration(text) == round(seconds * NS)
    assert parse_time(f"-{text}", now) == now - round(seconds * NS)  # API times
    assert cli_seconds(text) == seconds
    assert scenario_seconds(text) == seconds
    assert load_site(site_file(tmp_path, text)).anomaly.on_delay["limit"] == seconds


@pytest.mark.parametrize("text", REFUSED)
def test_every_reader_refuses_the_same_texts(tmp_path: Path, text: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    shown = repr(text if len(text) <= 40 else text[:37] + "...")
    with pytest.raises(DurationError, match="duration"):
        parse_duration(text)
    with pytest.raises(ValueError, match=r"duration|not a time"):
        parse_time(f"-{text}", 0)
    with pytest.raises(SystemExit) as e:
        cli_seconds(text)
    assert e.value.code == 2 and "--duration" in capsys.readouterr().err
    with pytest.raises(ValueError):
        scenario_seconds(text)
    with pytest.raises(ConfigError) as e:
        load_site(site_file(tmp_path, text))
    assert "anomaly.on_delay.limit" in str(e.value) and shown in str(e.value)


def test_a_number_alone_is_seconds_and_a_negative_one_is_refused() -> None:
    assert scenario_seconds(90) == 90.0
    with pytest.raises(ValueError, match="negative"):
        scenario_seconds(-1)
    with pytest.raises(argparse.ArgumentTypeError):
        duration("-1")
