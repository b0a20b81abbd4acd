"""`scadawatch replay` over the recordings in tests/cases/detection/: the alarms each raises.

Each case folder holds `site.toml`, `readings.csv` (written by the folder's make.py) and
`expected.txt`: one alarm a line, `kind | tag | zone | message` (`-` for no tag or zone), in
sorted order, so a missing, an extra or a reworded alarm fails the case. A folder that also
holds `disagrees.txt` expects what docs/anomaly-detection.md says while the engine does
otherwise (the file says how): it is an expected failure until the engine is fixed, and a
strict one, so the fix shows.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import CliRun

from scadawatch.cli import EXIT_OK

CASES = Path(__file__).resolve().parents[1] / "cases" / "detection"


def alarm_line(alarm: dict) -> str:
    return " | ".join([alarm["kind"], alarm["tag"] or "-", alarm["zone"] or "-",
                       alarm["message"]])


def case_param(case: Path) -> object:
    disagreement = case / "disagrees.txt"
    marks = [pytest.mark.xfail(reason=disagreement.read_text(encoding="utf-8").strip(),
                               strict=True)] if disagreement.exists() else []
    return pytest.param(case, id=case.name, marks=marks)


@pytest.mark.parametrize("case", [case_param(p) for p in sorted(CASES.iterdir()) if p.is_dir()
                                  and p.name != "__pycache__"])
def test_replay_case(case: Path, cli: CliRun, tmp_path: Path) -> None:
    out = tmp_path / "alarms.jsonl"
    code, _, err = cli("replay", "--config", case / "site.toml", "--input",
                       case / "readings.csv", "--out", out)
    assert code == EXIT_OK, err
    got = sorted(alarm_line(json.loads(line)) for line in out.read_text().splitlines())
    want = [line for line in (case / "expected.txt").read_text(encoding="utf-8").splitlines()
            if line.strip()]
    assert got == want
