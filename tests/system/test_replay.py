"""`scadawatch replay` over a real simulator export: alarms.jsonl as DESIGN.md has it, the same
alarms whatever the input form or chunking, and engine state carried across two runs."""

from __future__ import annotations

import gzip
import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import CliRun

from gateway.alarms.encoding import encode
from gateway.detection import build_engine
from gateway.engine_state import save_state
from gateway.site.loader import load_site
from gateway.storage.recording import RecordingReader
from scadawatch.cli import main as cli_main
from scadawatch.commands.replay import run

ALARM_KEYS = {"id", "kind", "tag", "zone", "start", "end", "priority", "message"}
ISO_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One simulated day of the water site with comms faults (empty cells), every 15 min."""
    out = tmp_path_factory.mktemp("export")
    assert cli_main(["simulate", "water", "--scenario", "comms-faults", "--export", str(out),
                     "--days", "1", "--step", "15min"]) == 0
    return out


def replay(cli: CliRun, export: Path, source: Path, out: Path, *extra: str
           ) -> tuple[int, str, str, list[dict]]:
    code, stdout, err = cli("replay", "--config", export / "site.toml", "--input", source,
                            "--out", out, *extra)
    alarms = ([json.loads(line) for line in out.read_text().splitlines()]
              if code == 0 else [])
    return code, stdout, err, alarms


def test_replay_writes_every_alarm_once_sorted_by_start(cli: CliRun, export: Path,
                                                        tmp_path: Path) -> None:
    code, out, err, alarms = replay(cli, export, export, tmp_path / "alarms.jsonl")
    assert code == 0, err
    assert "96 rows x 25 tags" in out and "tag-samples/s" in out
    assert re.search(r"empty cells [1-9]\d* \(no reading\)", out)
    assert alarms, "the comms-faults day raises alarms"
    assert len({a["id"] for a in alarms}) == len(alarms)
    assert [a["start"] for a in alarms] == sorted(a["start"] for a in alarms)
    for a in alarms:
        assert a.keys() >= ALARM_KEYS
        assert ISO_Z.fullmatch(a["start"])
        assert a["end"] is None or (ISO_Z.fullmatch(a["end"]) and a["end"] >= a["start"])
    assert f"alarms {len(alarms)}" in out


@pytest.mark.parametrize("form", ["readings.csv", "readings.csv.gz"])
def test_input_forms_give_the_same_alarms(cli: CliRun, export: Path, tmp_path: Path,
                                          form: str) -> None:
    source = tmp_path / form
    data = (export / "readings.csv").read_bytes()
    source.write_bytes(gzip.compress(data) if form.endswith(".gz") else data)
    _, _, _, reference = replay(cli, export, export, tmp_path / "ref.jsonl")
    code, _, err, alarms = replay(cli, export, source, tmp_path / "alarms.jsonl")
    assert code == 0, err
    assert alarms == reference


@pytest.mark.parametrize("chunk", [1, 3000])
def test_chunking_does_not_change_the_alarms(export: Path, chunk: int) -> None:
    site = load_site(export / "site.toml")

    def alarms(chunk_bytes: int) -> list[dict]:
        engine = build_engine(site)
        with RecordingReader(export, engine.table.tags, chunk_bytes=chunk_bytes) as reader:
            found, _ = run(engine, reader, reader, progress=False)
        return [encode(a) for a in found]

    assert alarms(chunk) == alarms(4 << 20)


def test_state_carries_learning_and_open_alarms_across_runs(cli: CliRun, export: Path,
                                                            tmp_path: Path) -> None:
    """Half a day, then the other half with --state: the alarms of one whole run."""
    lines = (export / "readings.csv").read_text().splitlines(keepends=True)
    half = 1 + (len(lines) - 1) // 2  # 12:00, a tick boundary
    (tmp_path / "a.csv").write_text("".join(lines[:half]))
    (tmp_path / "b.csv").write_text(lines[0] + "".join(lines[half:]))
    state = tmp_path / "engine.npz"
    _, _, _, whole = replay(cli, export, export, tmp_path / "whole.jsonl")
    code, _, err, first = replay(cli, export, tmp_path / "a.csv", tmp_path / "1.jsonl",
                                 "--state", str(state))
    assert code == 0 and state.exists(), err
    code, _, err, second = replay(cli, export, tmp_path / "b.csv", tmp_path / "2.jsonl",
                                    "--state", str(state))
    assert code == 0, err
    merged = {a["id"]: a for a in first} | {a["id"]: a for a in second}
    assert sorted(merged.values(), key=lambda a: (a["start"], a["id"])) == whole


def test_state_of_another_site_is_refused(cli: CliRun, export: Path, tmp_path: Path) -> None:
    state = tmp_path / "engine.npz"
    assert replay(cli, export, export, tmp_path / "1.jsonl", "--state", str(state))[0] == 0
    other = tmp_path / "other"
    other.mkdir()
    site = (export / "site.toml").read_text()
    first_point = site.index("[[points]]")
    (other / "site.toml").write_text(site[:first_point] + site[site.index("[[points]]",
                                                                           first_point + 1):])
    shutil.copy(export / "readings.csv", other / "readings.csv")
    dropped = re.search(r'tag = "([^"]+)"', site[first_point:]).group(1)  # type: ignore[union-attr]
    text = (other / "readings.csv").read_text().splitlines()
    header = text[0].split(",")
    at = header.index(dropped)
    (other / "readings.csv").write_text("\n".join(
        ",".join(c for i, c in enumerate(row.split(",")) if i != at) for row in text) + "\n")
    code, _, err = cli("replay", "--config", other / "site.toml", "--input", other,
                       "--out", tmp_path / "2.jsonl", "--state", state)
    assert code == 2 and "saved for other" in err and "Traceback" not in err


def test_output_in_a_missing_directory_is_a_usage_error(cli: CliRun, export: Path,
                                                        tmp_path: Path) -> None:
    code, _, err = cli("replay", "--config", export / "site.toml", "--input", export,
                       "--out", tmp_path / "nowhere" / "alarms.jsonl")
    assert code == 2 and "no such directory" in err


def crafted_from(state: Path, marker: Path) -> None:
    """`state` with the zone model's river trees as the old layout pickled them, made to
    create `marker` if unpickled (issue 13 D4)."""
    import pickle

    import numpy as np

    class Exploit:
        def __reduce__(self) -> tuple:
            return (Path.touch, (marker,))

    with np.load(state) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["zone_score/models"] = np.frombuffer(pickle.dumps(Exploit()), dtype=np.uint8)
    np.savez(state, **arrays)


def test_a_crafted_state_is_refused_and_runs_no_code(cli: CliRun, export: Path,
                                                      tmp_path: Path) -> None:
    state, marker = tmp_path / "engine.npz", tmp_path / "code-ran"
    assert replay(cli, export, export, tmp_path / "1.jsonl", "--state", str(state))[0] == 0
    crafted_from(state, marker)
    code, _, err = cli("replay", "--config", export / "site.toml", "--input", export,
                       "--out", tmp_path / "2.jsonl", "--state", state)
    assert code == 2 and "zone_score/models" in err and "Traceback" not in err
    assert not marker.exists()


def test_the_gateway_discards_a_crafted_state_saying_why(export: Path, tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    from gateway.data_dir import state_path
    from gateway.detection import Detection

    site = load_site(export / "site.toml")
    site = site.model_copy(update={"site": site.site.model_copy(update={"data_dir": tmp_path})})
    save_state(build_engine(site), state_path(site))
    marker = tmp_path / "code-ran"
    crafted_from(state_path(site), marker)
    detection = Detection(site, lambda events: None)
    with caplog.at_level("WARNING"):
        assert detection.cursor() == 0  # learning from scratch, from the spool's start
    assert "event=anomaly_state_discarded" in caplog.text and "zone_score/models" in caplog.text
    assert not marker.exists()
