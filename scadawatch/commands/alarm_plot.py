"""`scadawatch evaluate --plot`: each tag of a recording over time, with the label windows and
the alarm spans at that tag (or its zone) shaded. matplotlib is the optional `plot` extra."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from anomaly.core.alarms import Alarm
from anomaly.core.batch import Batch
from anomaly.evaluation import Label
from scadawatch.cli import UsageError

MAX_POINTS = 20_000  # per tag: more than a PNG's width can show


def _zone(tag: str, zone_of: Mapping[str, str | None]) -> str | None:
    return zone_of.get(tag) or (tag.split(".", 1)[0] if "." in tag else None)


def label_at(tag: str, label: Label, zone_of: Mapping[str, str | None]) -> bool:
    loc = label.location
    return tag == loc or _zone(tag, zone_of) == loc or tag.startswith(loc + ".")


def alarm_at(tag: str, alarm: Alarm, zone_of: Mapping[str, str | None]) -> bool:
    if alarm.tag is not None or alarm.tags:
        return alarm.tag == tag or tag in alarm.tags
    return alarm.zone is not None and alarm.zone == _zone(tag, zone_of)


def _with_gaps(ts: np.ndarray, value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A NaN after every gap over twice the usual step, so missing readings show as breaks
    in the line rather than as a straight segment across them."""
    if len(ts) < 3:
        return ts, value
    step = np.diff(ts)
    after = np.flatnonzero(step > 2 * np.median(step)) + 1
    return (np.insert(ts, after, ts[after - 1] + 1),
            np.insert(value.astype(float), after, np.nan))


def plot(path: Path, tags: Sequence[str], batches: list[Batch], alarms: Sequence[Alarm],
         labels: Sequence[Label], zone_of: Mapping[str, str | None]) -> None:
    """Write a PNG: one panel per tag with readings (`point` indexes `tags`)."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install 'scadawatch[plot]'") from None
    data = Batch.concat(batches)
    points = np.unique(data.point).tolist()
    end = np.datetime64(int(data.source_ts.max()), "ns") if len(data) else None
    fig, axes = plt.subplots(len(points), 1, sharex=True, squeeze=False,
                             figsize=(12, 1.0 * len(points) + 1.0))
    for ax, p in zip(axes[:, 0], points, strict=True):
        tag = tags[p]
        rows = np.flatnonzero(data.point == p)[:: max(1, int(np.sum(data.point == p))
                                                        // MAX_POINTS)]
        ts, value = _with_gaps(data.source_ts[rows], data.value[rows])
        ax.plot(ts.view("datetime64[ns]"), value, lw=0.7, color="#333333")
        for x in labels:
            if label_at(tag, x, zone_of):
                ax.axvspan(np.datetime64(x.start_ns, "ns"), np.datetime64(x.end_ns, "ns"),
                           color="#1f77b4", alpha=0.2, lw=0)
        for a in alarms:
            if alarm_at(tag, a, zone_of):
                stop = end if a.end_ns is None else np.datetime64(a.end_ns, "ns")
                ax.axvspan(np.datetime64(a.start_ns, "ns"), stop, color="#d62728", alpha=0.25,
                           lw=0)
        ax.set_ylabel(tag, rotation=0, ha="right", va="center", fontsize=7)
        ax.tick_params(labelsize=7)
    fig.legend(handles=[Patch(color="#1f77b4", alpha=0.2, label="label window"),
                        Patch(color="#d62728", alpha=0.25, label="alarm")],
               loc="upper right", fontsize=8)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=80)
    except OSError as e:
        raise UsageError(f"--plot {path}: cannot write it ({e.strerror or e})") from None
    finally:
        plt.close(fig)
