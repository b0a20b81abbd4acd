"""`scadawatch evaluate`: read alarms.jsonl and labels.csv, score them (anomaly/evaluation.py),
print a table per kind (or JSON), and with `--plot` draw the recording with both shaded."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from anomaly.core.alarms import Alarm
from anomaly.evaluation import Evaluation, Label, Score, evaluate
from api.times import parse_time
from gateway.storage.recording import RecordingError, RecordingReader
from scadawatch.cli import EXIT_OK, UsageError
from timegrammar import NS, format_duration
from timegrammar.iso import iso

LABEL_COLUMNS = ("kind", "location", "start", "end")


def _time(text: object, where: str) -> int:
    try:
        return parse_time(str(text), 0)
    except ValueError as e:
        raise UsageError(f"{where}: {e}") from None


def read_alarms(path: Path) -> list[Alarm]:
    """Alarms as `scadawatch replay` (or the API) writes them, one JSON object per line."""
    alarms = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: cannot read it ({e})") from None
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}: line {n}"
        try:
            doc = json.loads(line)
        except ValueError as e:
            raise UsageError(f"{where}: not JSON ({e})") from None
        if not isinstance(doc, dict):
            raise UsageError(f"{where}: expected a JSON object, got {type(doc).__name__}")
        missing = [k for k in ("id", "kind", "start") if k not in doc]
        if missing:
            raise UsageError(f"{where}: no {', '.join(missing)}")
        end = doc.get("end")
        alarms.append(Alarm(
            id=str(doc["id"]), kind=str(doc["kind"]), tag=doc.get("tag"), zone=doc.get("zone"),
            start_ns=_time(doc["start"], f"{where}, start"),
            end_ns=None if end is None else _time(end, f"{where}, end"),
            priority=str(doc.get("priority", "low")), message=str(doc.get("message", "")),
            tags=tuple(doc.get("tags") or ()), device=doc.get("device")))
    return alarms


def read_labels(path: Path) -> list[Label]:
    """labels.csv: kind, location, start, end; rows numbered as a spreadsheet shows them."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: cannot read it ({e})") from None
    if not rows:
        raise UsageError(f"{path}: the file is empty; row 1 must be {','.join(LABEL_COLUMNS)}")
    header = [c.strip() for c in rows[0]]
    missing = [c for c in LABEL_COLUMNS if c not in header]
    if missing:
        raise UsageError(f"{path}: row 1: no column {', '.join(missing)} (the columns are "
                         f"{','.join(LABEL_COLUMNS)})")
    at = {c: header.index(c) for c in LABEL_COLUMNS}
    labels = []
    for n, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise UsageError(f"{path}: row {n}: {len(row)} cells, the header has {len(header)}")
        cell = {c: row[i].strip() for c, i in at.items()}
        for c in ("kind", "location"):
            if not cell[c]:
                raise UsageError(f"{path}: row {n}, column {c}: empty")
        start = _time(cell["start"], f"{path}: row {n}, column start")
        end = _time(cell["end"], f"{path}: row {n}, column end")
        if end < start:
            raise UsageError(f"{path}: row {n}, column end: {cell['end']} is before the start "
                             f"{cell['start']}")
        labels.append(Label(cell["kind"], cell["location"], start, end))
    return labels


def _percent(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _delay(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds / 60:.0f} min" if abs(seconds) < 7200 else f"{seconds / 3600:.1f} h"


def table(result: Evaluation) -> list[str]:
    head = ("kind", "labels", "detected", "recall", "alarms", "false", "precision", "F1",
            "median delay", "false/zone-day")
    width = (13, 6, 8, 6, 6, 5, 9, 4, 12, 14)

    def line(cells: tuple[str, ...]) -> str:
        return " ".join(c.ljust(w) if i == 0 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(cells, width, strict=True)))

    def row(s: Score) -> str:
        return line((s.kind, str(s.labels), str(s.detected), _percent(s.recall), str(s.alarms),
                     str(s.false_alarms), _percent(s.precision), _percent(s.f1),
                     _delay(s.median_delay_s),
                     "-" if s.false_per_zone_day is None else f"{s.false_per_zone_day:.2f}"))

    return [line(head), *map(row, result.kinds), row(result.overall)]


def main(args: argparse.Namespace) -> int:
    grace, slack = round(args.grace * NS), round(args.slack * NS)
    if args.plot and not args.input:
        raise UsageError("--plot needs --input, the recording to draw")
    alarms, labels = read_alarms(Path(args.alarms)), read_labels(Path(args.labels))
    zone_of: dict[str, str | None] = {}
    tags = None
    if args.config:
        from scadawatch.commands.serve import load

        site = load(args.config)
        zone_of = {p.tag: p.zone for p in site.points}
        tags = [p.tag for p in site.points]
    span = recording = None
    if args.input:
        try:
            with RecordingReader(args.input, tags) as reader:
                # Without --plot only the time span is wanted: batches are not kept.
                batches = [b for b in reader if args.plot]
        except RecordingError as e:
            raise UsageError(str(e)) from None
        assert reader.stats.first_ns is not None and reader.stats.last_ns is not None
        span = (reader.stats.first_ns, reader.stats.last_ns)
        recording = (reader.columns if tags is None else tags, batches)
    result = evaluate(alarms, labels, slack_ns=slack, grace_ns=grace, zone_of=zone_of,
                      span_ns=span)
    if args.json:
        print(json.dumps({**result.to_json(), "grace_s": grace / 1e9, "slack_s": slack / 1e9}))
    else:
        print("\n".join(table(result)))
        print(f"zones {result.zones}, days {result.days:.2f}"
              f" ({'recording' if span else 'labels and alarms'}); grace {format_duration(grace)}, "
              f"slack {format_duration(slack)}")
        for x in result.missed:
            print(f"missed: {x.kind} at {x.location} from {iso(x.start_ns)}")
    if args.plot:
        from scadawatch.commands.alarm_plot import plot

        assert recording is not None
        plot(Path(args.plot), *recording, alarms, labels, zone_of)
        if not args.json:
            print(f"plot: {args.plot}")
    return EXIT_OK
