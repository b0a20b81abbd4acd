"""Storage in a zone's balance (anomaly/water/storage.py): a tank's filling is not consumption, with
its geometry given (area in the level's unit, volume curve) or learned from pump switching;
a tank whose main is metered stays out of the balance; what is learned is logged."""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import pytest

from anomaly.core.points import PointInfo, PointTable
from anomaly.core.ticks import Tick
from anomaly.water.storage import BIN_S, Storage
from anomaly.water.tank_mains import TankMains
from anomaly.water.tank_profile import TankProfile

DEMAND = 20.0  # L/s
PUMP = 45.0  # L/s, on below LOW and off above HIGH (m)
LOW, HIGH = 2.0, 3.5
BINS = 6 * 96  # six days


def cone(level_m: np.ndarray) -> np.ndarray:
    """m3 of a tank that widens upwards: 100 m2 at the floor, 200 m2 at 4 m."""
    return 100 * level_m + 12.5 * level_m ** 2


CURVE = [(h, float(cone(np.array(h)))) for h in np.linspace(0.0, 4.0, 9)]


def run(point: PointInfo, metered: bool = False, seed: int = 1) -> tuple[Storage, np.ndarray]:
    """A zone fed by a pump under the tank's level control, 15-minute bins: (the storage, the
    consumption it gives per bin: net inflow less the tank's filling). With `metered`, the
    tank's main has a meter with a role, so the net inflow already is the consumption."""
    table = PointTable([PointInfo("z.in", "flow", "L/s", zone="z", role="inflow"), point])
    storage = Storage(table)
    rng = np.random.default_rng(seed)
    metres = {"m": 1.0, "cm": 0.01}[point.unit]
    level, pump, out = 3.0, 0.0, []
    for _ in range(BINS):
        pump = PUMP if level < LOW else 0.0 if level > HIGH else pump
        demand = DEMAND * (1 + 0.3 * np.sin(len(out) / 96 * 2 * np.pi)) + rng.normal(0, 0.3)
        volume = cone(np.array(level)) + (pump - demand) / 1000 * BIN_S
        level = float(np.interp(volume, cone(np.linspace(0, 5, 501)), np.linspace(0, 5, 501)))
        storage.edge(np.array([(level + rng.normal(0, 0.003)) / metres]))
        net = demand if metered else pump + rng.normal(0, 0.2)
        into, known, _ = storage.rates()
        storage.learn(np.array([net]), np.array([True]))
        out.append(net - into[0] if known[0] else np.nan)
    return storage, np.array(out)


@pytest.mark.parametrize("point", [
    PointInfo("z.tank.level", "level", "m", zone="z", volume_curve=CURVE),
    PointInfo("z.tank.level", "level", "cm", zone="z",
              volume_curve=[(h * 100, v) for h, v in CURVE]),
    PointInfo("z.tank.level", "level", "m", zone="z"),  # learned: an effective area
], ids=["volume curve", "volume curve in cm", "learned"])
def test_consumption_does_not_follow_the_pump(point: PointInfo) -> None:
    storage, consumption = run(point)
    late = consumption[3 * 96:]  # the learned area settles within days
    demand = DEMAND * (1 + 0.3 * np.sin(np.arange(3 * 96, BINS) / 96 * 2 * np.pi))
    error = np.abs(late - demand)
    assert np.nanmedian(error) < 1.5, np.nanmedian(error)  # the pump's 45 L/s steps are gone
    assert storage.used[0] or not storage.learned[0]


def test_an_area_in_centimetres_is_an_area() -> None:
    table = PointTable([PointInfo("z.in", "flow", "L/s", zone="z", role="inflow"),
                        PointInfo("z.tank.level", "level", "cm", zone="z", area=150.0)])
    storage = Storage(table)
    storage.edge(np.array([200.0]))
    storage.edge(np.array([209.0]))  # 9 cm in 15 minutes: 13.5 m3, 15 L/s
    into, known, tanks = storage.rates()
    assert into[0] == pytest.approx(15.0) and known[0] and tanks[0]


def test_a_metered_tank_stays_out_of_the_balance(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="anomaly.water.storage"):
        storage, consumption = run(PointInfo("z.tank.level", "level", "m", zone="z"),
                                   metered=True)
    assert storage.settled()[0] and not storage.used[0]
    assert storage.area[0] < 5 * storage.se[0]  # ~0: its steps come with no inflow step
    demand = DEMAND * (1 + 0.3 * np.sin(np.arange(BINS) / 96 * 2 * np.pi))
    assert np.nanmedian(np.abs(consumption - demand)[3 * 96:]) < 0.5  # the meter's, untouched
    assert not [r for r in caplog.records if "in_balance=true" in r.getMessage()]


def test_a_learned_area_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="anomaly.water.storage"):
        storage, _ = run(PointInfo("z.tank.level", "level", "m", zone="z"))
    (zone, record, *_) = [r.getMessage() for r in caplog.records
                          if "in_balance=true" in r.getMessage()]
    assert zone.startswith("event=zone_storage_learned zone=z in_balance=true judged=true tanks=1 ")
    assert record.startswith("event=tank_area_learned tag=z.tank.level in_balance=true area_m2=")
    # the cone's area between the pump's levels: 150-187 m2
    assert 140 < storage.area[0] < 200



@pytest.mark.parametrize(("noise", "pump", "seed"), [
    (0.05, 60.0, 1), (0.05, 60.0, 3), (0.08, 100.0, 2),
], ids=["swings 5 %, pump 60 L/s", "another seed", "swings 8 %, pump 100 L/s"])
def test_a_learned_area_is_the_tanks_under_demand_noise(noise: float, pump: float,
                                                       seed: int) -> None:
    """A 200 m2 tank in a 200 L/s zone whose inflow steps by `pump` L/s on the tank's level
    (a pump of several switching),
    demand with a daily cycle and swings for hours (AR noise, `noise` of the demand), levels
    to the cm: demand changing across a pump step moves the level too, which must not bias
    the learned area (least squares takes it towards 0)."""
    table = PointTable([PointInfo("z.in", "flow", "L/s", zone="z", role="inflow"),
                        PointInfo("z.tank.level", "level", "m", zone="z")])
    storage = Storage(table)
    rng = np.random.default_rng(seed)
    level, on, swing = 3.0, False, 0.0
    for b in range(10 * 96):
        on = True if level < 2.5 else False if level > 3.5 else on
        inflow = 240.0 if on else 240.0 - pump
        swing = 0.8 * swing + 0.6 * noise * rng.standard_normal()
        demand = 200.0 * (1 + 0.2 * np.sin(b / 96 * 2 * np.pi)) * (1 + swing)
        level = min(max(level + (inflow - demand) / 1000 / 200.0 * BIN_S, 0.5), 5.5)
        storage.edge(np.array([round(level + rng.normal(0, 0.003), 2)]))
        storage.learn(np.array([inflow + rng.normal(0, 0.5)]), np.array([True]))
    assert storage.used[0]
    assert storage.area[0] == pytest.approx(200.0, rel=0.1)


def floating_zone(tanks: int, seed: int, *, together: bool = False,
                  days: float = 5.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(areas m2, net inflow L/s per bin, levels m per bin x tank) of a zone of 200 L/s whose
    tanks float on one system head H (as Net6's 32 do): each takes g_k (H - h_k), g_k its
    area over a relaxation time of 2-10 h, and shuts at its top (an altitude valve); a
    240 L/s pump switches on tank 0's level (a 0.3 m band), demand has a daily cycle and
    hours-long swings. `together`: tanks at one site, alike but for their areas, none
    reaching its top: their levels move as one."""
    rng = np.random.default_rng(seed)
    areas = np.exp(rng.uniform(np.log(150.0), np.log(3000.0), tanks))
    tau = np.full(tanks, 4 * 3600.0) if together else rng.uniform(2, 10, tanks) * 3600
    if not together:
        areas[0], tau[0] = 250.0, 2 * 3600.0  # the pump's tank: small and quick
    g = areas / tau
    top = np.full(tanks, np.inf) if together else rng.uniform(4.5, 6.0, tanks)
    h = np.full(tanks, 2.6) if together else rng.uniform(2.0, 3.5, tanks)
    on, swing, inflow, levels = False, 0.0, [], []
    for b in range(int(days * 96)):
        on = True if h[0] < 2.4 else False if h[0] > 2.7 else on
        swing = 0.8 * swing + 0.6 * 0.03 * rng.standard_normal()
        demand = 200.0 * (1 + 0.3 * np.sin(b / 96 * 2 * np.pi)) * (1 + swing)
        into = (200.0 + (120.0 if on else -120.0) - demand) / 1000  # m3/s into the tanks
        free = np.ones(tanks, dtype=bool)
        for _ in range(3):  # a tank at its top with the head above it is shut
            head = (into + np.sum(g[free] * h[free])) / np.sum(g[free])
            now = ~((h >= top) & (head > h))
            if (now == free).all():
                break
            free = now
        h = np.minimum(h + np.where(free, g * (head - h), 0.0) / areas * BIN_S, top)
        inflow.append(200.0 + (120.0 if on else -120.0) + rng.normal(0, 0.5))
        levels.append(np.round(h + rng.normal(0, 0.002, tanks), 3))
    return areas, np.array(inflow), np.array(levels)


def run_floating(areas: np.ndarray, inflow: np.ndarray,
                 levels: np.ndarray) -> tuple[Storage, np.ndarray]:
    """(the storage, per bin where the zone is judged: the storage rate it gives less the
    tanks' own, L/s; NaN where not judged)."""
    points = [PointInfo("z.in", "flow", "L/s", zone="z", role="inflow"),
              *[PointInfo(f"z.t{k}.level", "level", "m", zone="z") for k in range(len(areas))]]
    storage = Storage(PointTable(points))
    error = np.full(len(inflow), np.nan)
    for b in range(len(inflow)):
        storage.edge(levels[b])
        into, _, tanks = storage.rates()
        judged = storage.settled()[0]  # as the leak detector asks: before the bin is learned
        storage.learn(inflow[b:b + 1], np.array([True]))
        if b and judged:
            true = (levels[b] - levels[b - 1]) / BIN_S * 1000 @ areas
            error[b] = (into[0] if tanks[0] else 0.0) - true
    return storage, error


@pytest.mark.parametrize(("tanks", "seed", "together"), [
    (32, 1, False), (16, 4, False), (6, 1, True), (6, 2, True),
], ids=["32 tanks, 8 pump steps", "16 tanks, 10 pump steps", "6 tanks moving together",
        "another 6 moving together"])
def test_a_zone_is_judged_only_on_the_storage_its_steps_identify(tanks: int, seed: int,
                                                                 together: bool) -> None:
    """Many floating tanks and few pump steps in five days: fitted one by one, 32 areas on
    8 steps explain them all (a small tank learned at 10 times its area, the storage 40 L/s
    off at the hour): the zone waits, unjudged, for steps enough. Tanks whose levels move
    together are one unknown: they enter together, the sum of their areas the tanks' (one
    tank's own is not known: the fit splits the sum evenly, not on one of them)."""
    areas, inflow, levels = floating_zone(tanks, seed, together=together)
    storage, error = run_floating(areas, inflow, levels)
    hourly = np.convolve(error, np.ones(4) / 4, "valid")
    judged = hourly[np.isfinite(hourly)]
    # where judged, the storage is the tanks' to 5 % of the zone's 200 L/s, hour by hour
    assert not len(judged) or np.percentile(np.abs(judged), 95) < 10.0
    if together:  # one tank's area is not known, their sum is
        assert storage.used.all()
        assert storage.area.sum() == pytest.approx(areas.sum(), rel=0.1)
    else:
        assert not len(judged) and not storage.used.any()


def test_a_zone_its_tanks_cannot_be_told_in_says_so(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="anomaly.water.storage"):
        run_floating(*floating_zone(32, 1))
    (line,) = [r.getMessage() for r in caplog.records if "zone_storage_learned" in r.getMessage()]
    assert line.startswith("event=zone_storage_learned zone=z in_balance=false judged=false "
                           "tanks=32 tanks_in=0 steps=")


def gravity_zone(seed: int, *, main: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(areas m2, inflow L/s per bin, levels m per bin x tank) of a zone fed by gravity beside a
    floating tank that gives half of the demand above the mean: inflow and the tank's level
    rate move against each other, but the inflow carries the demand at any level rate.
    `main`: the flow is the tank's own main's instead (into the zone)."""
    rng = np.random.default_rng(seed)
    demand = DEMAND * (1 + 0.3 * np.sin(np.arange(BINS) / 96 * 2 * np.pi))
    into = -(demand - DEMAND) / 2  # L/s into the tank
    levels = 3.0 + np.cumsum(into) * BIN_S / 1000 / 200.0 + rng.normal(0, 0.003, BINS)
    flow = -into if main else demand + into
    return np.array([200.0]), flow + rng.normal(0, 0.2, BINS), levels[:, None]


@pytest.mark.parametrize(("zone", "tanks_metered"), [
    (lambda: gravity_zone(1, main=True), [True]),
    (lambda: gravity_zone(1), [False]),
    (lambda: floating_zone(6, 1), [False] * 6),
], ids=["its own main", "a gravity inflow beside a floating tank",
        "a pumped inflow beside six floating tanks"])
def test_a_tank_main_is_a_meter_that_carries_only_the_tanks_flow(
        zone: Callable[[], tuple[np.ndarray, np.ndarray, np.ndarray]],
        tanks_metered: list[bool]) -> None:
    """anomaly/water/tank_mains.py: a balance meter is a tank's main when it carries the tank's
    flow and nothing else; one carrying the zone's demand beside the tank, or a pump's
    filling it, is not."""
    _, flow, levels = zone()
    points = [PointInfo("z.in", "flow", "L/s", zone="z", role="inflow"),
              *[PointInfo(f"z.t{k}.level", "level", "m", zone="z")
                for k in range(levels.shape[1])]]
    mains = TankMains(PointTable(points), np.array([0]), np.array([1.0]))
    for b in range(1, len(flow)):
        mains.add(flow[b:b + 1], np.array([True]))
        mains.close((levels[b] - levels[b - 1]) / BIN_S * 1000)
    assert mains.metered.tolist() == tanks_metered


def tick_of(b: int, levels: np.ndarray) -> Tick:
    """One reading per point at the start of bin b: the inflow (unread here), the tanks."""
    levels = np.r_[0.0, levels]
    start = b * int(BIN_S) * 10**9
    n = len(levels)
    return Tick(start, start + 10**9, np.ones(n, dtype=np.int64), levels, levels, levels,
                levels, np.full(n, start, dtype=np.int64), np.zeros(n, dtype=np.int64))


@pytest.mark.parametrize(("held_at", "flicker"), [
    (5.0, 1 / 40), (5.0, 1 / 8), (0.5, 1 / 40),
], ids=["held full, a flicker a day or so", "held full, flickering often",
        "held at its floor"])
def test_a_tank_held_at_an_end_is_no_storage_to_learn(held_at: float, flicker: float) -> None:
    """A zone whose pump fills a 200 m2 tank on its level, beside a 250 m2 tank its controls
    hold full (or empty): closed, no flow, its reading flickering by its resolution (1 cm) now
    and then. Its flicker is no level step (steps from a level resting at one reading would
    blanket the pump's), and no storage: the pumped tank's area is learned, the held tank's
    stays 0 (ky4's T-1 and T-2, tuning; ky10's eight tanks held full, held out)."""
    table = PointTable([PointInfo("z.in", "flow", "L/s", zone="z", role="inflow"),
                        PointInfo("z.pumped.level", "level", "m", zone="z"),
                        PointInfo("z.held.level", "level", "m", zone="z")])
    storage = Storage(table)
    rng = np.random.default_rng(4)
    level, pump, net = 3.0, 0.0, np.nan
    for b in range(8 * 96):
        held = held_at + (0.01 if rng.random() < flicker else 0.0)
        reading = np.array([round(level + rng.normal(0, 0.003), 2), held])
        tick = tick_of(b, reading)
        if b:
            storage.edge(storage.edge_level(tick))
            storage.learn(np.array([net]), np.array([True]))
        storage.observe(tick)
        pump = PUMP if level < LOW else 0.0 if level > HIGH else pump
        demand = DEMAND * (1 + 0.3 * np.sin(b / 96 * 2 * np.pi)) + rng.normal(0, 0.3)
        level += (pump - demand) / 1000 / 200.0 * BIN_S
        net = pump + rng.normal(0, 0.2)
    assert storage.used[0] and storage.area[0] == pytest.approx(200.0, rel=0.1)
    assert storage.area[1] == 0.0 and not storage.used[1]


@pytest.mark.parametrize(("before", "after"), [(0.0, 200.0), (472.0, 263.0)],
                         ids=["the tank enters", "its area refits lower"])
def test_the_minimum_night_flows_nights_follow_the_learned_area(before: float,
                                                                after: float) -> None:
    """The leak detector keeps its past nights' and tonight's minimum night flow as
    consumption at the tank's area then; when the area moves they move with it, as the
    profile does: a night whose tank filled at 0.05 (x 1000 m/s) is 0.05 L/s per m2 less at the
    larger area (ky4's clean seed 52, tuning: nights kept at 472 m2, tonight's at 263, a
    false leak of 10 L/s)."""
    s = Storage(PointTable([PointInfo("z.in", "flow", "L/s", zone="z", role="inflow"),
                            PointInfo("z.tank.level", "level", "m", zone="z")]))
    p = TankProfile(s, day_bins=4, hour_bins=2, alpha=0.1, night_bins=2, nights=3)
    p.applied[:] = before
    night = np.full((2, 1), 30.0)  # tonight's window so far: both bins, at the old area
    nights = np.full((1, 2, 3), np.nan)
    nights[0, 0, 0] = 30.0  # one weekday night kept
    s.x[:] = 0.05
    for b in range(2):
        p.night_bin(np.array([b]), np.array([0]))
    p.keep_night(np.array([True]), 0, np.isfinite(night))
    mu, var = np.zeros((3, 4, 1)), np.full((3, 2, 1), np.nan)
    p.follow(np.array([after]), np.array([5.0]), mu, var, night, nights)
    expected = 30.0 - (after - before) * 0.05
    assert night[:, 0] == pytest.approx([expected, expected])
    assert nights[0, 0, 0] == pytest.approx(expected)
    assert np.isnan(nights[0, 1]).all() and np.isnan(nights[0, 0, 1:]).all()
