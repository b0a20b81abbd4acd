"""A saved state made the engine's own again: the same bits, and no more memory than the engine
that saved it held (its zeroed tables' untouched pages stay unmapped after a restart)."""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from anomaly.core.batch import Batch, Quality
from anomaly.core.points import PointInfo
from anomaly.engine import Engine
from anomaly.tables.state_part import restored
from gateway.engine_state import load_state, save_state
from gateway.memory import M_MMAP_THRESHOLD, MMAP_THRESHOLD

S = 10**9


def _mostly_zero() -> np.ndarray:
    a = np.zeros((48, 5000), dtype=np.float32)
    a[3, 17], a[3, 4095], a[40, ::7] = -0.0, np.nan, 2.5  # -0.0: nonzero bits
    return a


def _nan_payload() -> np.ndarray:
    return np.array([0, 0x7FF8_0000_0000_0001, 0x8000_0000_0000_0000, 0], np.uint64).view(
        np.float64)


@pytest.mark.parametrize(("saved", "dtype"), [
    (_mostly_zero(), None),
    (_nan_payload(), None),  # a NaN's payload and -0.0 kept bit for bit
    (np.arange(-3, 70000, dtype=np.int64) % 5, np.int16),  # an older state's wider dtype
    (np.asfortranarray(np.eye(300, 40000, dtype=np.uint8)), None),  # saved transposed
    (np.array([True, False] * 9000), None),
    (np.zeros((0, 7)), np.float32),
    (np.array(["a", ""]), None),  # no integer view of its bits: copied whole
    (np.array([np.nan, 0, -0.0, 6e-8, 65504] * 3000, dtype=np.float16), None),  # sensor's
    # hourly scales, NaN where not learned, a subnormal
    (np.array([0, 1, 64064, 65535] * 3000, dtype=np.uint16).reshape(-1, 24), None),  # runs
    (np.arange(3000, dtype=np.uint16).reshape(-1, 24).T, np.uint8),  # saved transposed
], ids=["float32-sparse", "nan-payload", "int64-to-int16", "fortran-order", "bool", "empty",
        "text", "float16", "uint16", "uint16-to-uint8"])
def test_a_restored_array_is_the_saved_one_bit_for_bit(saved: np.ndarray,
                                                       dtype: np.dtype | None) -> None:
    expected = np.array(saved, dtype=dtype, order="C")
    back = restored(saved, dtype)
    assert back.dtype == expected.dtype and back.shape == expected.shape
    assert back.flags.c_contiguous and not np.shares_memory(back, saved)
    assert back.tobytes() == expected.tobytes()


def _resident(arr: np.ndarray) -> int:
    """Bytes of `arr`'s pages written to (/proc/self/pagemap: present and mapped by this
    process alone; a page only read maps the system's shared zero page, which RSS leaves
    out)."""
    page = mmap.PAGESIZE
    first, last = arr.ctypes.data // page, (arr.ctypes.data + arr.nbytes - 1) // page
    with open("/proc/self/pagemap", "rb") as f:
        f.seek(first * 8)
        entries = np.frombuffer(f.read((last - first + 1) * 8), dtype=np.uint64)
    written = (entries >> np.uint64(63)) & (entries >> np.uint64(56)) & np.uint64(1)
    return int(written.sum()) * page


def _tables(engine: Engine) -> Iterator[tuple[str, np.ndarray]]:
    """The engine's per-tag tables (and their parts') of 1 MiB or more, by name."""
    for d in engine.detectors:
        for owner, obj in [(d.name, d), *((f"{d.name}.{k}", v) for k, v in vars(d).items()
                                          if type(v).__module__.startswith("anomaly."))]:
            for name, arr in vars(obj).items():
                if isinstance(arr, np.ndarray) and arr.base is None and arr.nbytes >= 2**20:
                    yield f"{owner}.{name}", arr


@pytest.fixture
def allocator_as_the_gateway() -> None:
    """Large arrays mapped on their own, as the gateway's allocator has them
    (gateway/memory.py): otherwise glibc may carve them from a heap that is mapped already."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)


@pytest.mark.skipif(not sys.platform.startswith("linux") or not ctypes.util.find_library("c"),
                    reason="/proc/self/pagemap and glibc's mallopt")
@pytest.mark.usefixtures("allocator_as_the_gateway")
def test_a_restart_holds_no_more_of_its_tables_than_the_engine_saved(tmp_path: Path) -> None:
    """Issue 17: 20 minutes into learning, 20,000 tags that hold still (setpoints, idle
    meters; bench.footprint's every tag) have written little of their daily profiles and
    run histograms; restarted from the saved state, the engine must not map the rest (at
    50,000 tags a restart held ~18 MB more than the gateway before it)."""
    n = 20_000
    points = [PointInfo(f"plc.f{k}", "flow", "L/s", device="plc") for k in range(n)]
    ts = np.repeat(np.arange(0, 20 * 60 * S, 20 * S), n)
    before = Engine(points)
    before.process(Batch.of(source_ts=ts, point=np.tile(np.arange(n), ts.size // n),
                            value=np.tile(np.arange(n, dtype=float), ts.size // n),
                            quality=Quality.GOOD))
    save_state(before, tmp_path / "state.npz")
    after = Engine(points)
    load_state(after, tmp_path / "state.npz")
    held = {name: _resident(arr) for name, arr in _tables(before)}
    page = mmap.PAGESIZE
    over = {name: (_resident(arr), held[name]) for name, arr in _tables(after)
            if _resident(arr) > held[name] + 2 * page}
    assert held and not over, over


def test_a_restored_engine_saves_the_state_it_was_restored_from(tmp_path: Path) -> None:
    """Every table in its own dtype (float16 hourly scales on their grid, uint16 run
    histograms, drift's float32 hours, small counts), the hour being learned rounded in at
    the save: an engine restored from a state holds it bit for bit."""
    rng = np.random.default_rng(3)
    points = [*(PointInfo(f"z.j{k}.pressure", "pressure", "m", zone="z", lo=0.0, hi=100.0)
                for k in range(4)),
              PointInfo("lone.pressure", "pressure", "m", lo=0.0, hi=100.0),
              PointInfo("dma.flow", "flow", "L/s"),
              PointInfo("tank.level", "level", "m", lo=0.0, hi=5.0)]
    ts = np.arange(0, 30 * 3600 * S, 300 * S)
    t = ts / (3600 * S)
    values = (np.stack([40 + 3 * np.sin(t * np.pi / 12) + k for k in range(5)]
                       + [20 + 5 * np.sin(t * np.pi / 12), 2 + np.round(np.sin(t / 5), 1)])
              + rng.normal(0, 0.05, (len(points), len(ts))))
    before = Engine(points)
    before.process(Batch.of(source_ts=np.repeat(ts, len(points)),
                            point=np.tile(np.arange(len(points)), len(ts)),
                            value=values.T.ravel(), quality=Quality.GOOD))
    save_state(before, tmp_path / "state.npz")
    saved = before.state()
    after = Engine(points)
    load_state(after, tmp_path / "state.npz")
    back = after.state()
    assert {k: (a.dtype, a.shape) for k, a in back.items()} == \
        {k: (a.dtype, a.shape) for k, a in saved.items()}
    assert {"float16", "uint16"} <= {str(a.dtype) for a in saved.values()}
    differ = [k for k, a in saved.items() if np.asarray(back[k]).tobytes() != a.tobytes()]
    assert not differ, differ
