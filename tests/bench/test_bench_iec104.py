"""bench.iec104 counts what it says: every phase (c104's client, the driver, the whole
gateway) gets each spontaneous report once, none of the general interrogation's values
counted as a report, against c104's station on loopback (a short run, not a timing)."""

from __future__ import annotations

from bench import iec104

POINTS = 1000  # 63 interrogation ASDUs: more than the gateway's sinks take in one store


def test_every_phase_counts_each_report_once() -> None:
    results = iec104.measure(POINTS, 1, 60.0)
    assert {name: counted for name, (_, counted, _) in results.items()} == {
        "c104": POINTS, "driver": POINTS, "gateway": POINTS}
