"""The control-room page under an alarm flood: 1,000 alarms in 10 s into a real alarm store,
served by the real API on loopback, the page open in headless Chromium (Debian's, through
Playwright).

Each run raises 1,000 alarms (100 engine ticks of 10, every 0.1 s) and times, in the page:
from the arrival of the last `raise` event to 1,000 rows in the alarm list, and to the next
painted frame. Then the page is reloaded during the flood: from navigation to the 1,000 rows
(a full render from the list call). The flood state and the KPIs are checked against the
store. Between runs the alarms are cleared and acknowledged (they leave the list).

    python -m bench.page [--runs 5] [--alarms 1000] [--seconds 10]

`run(quick)` gives the page's row of `python -m bench`. `launch()` starts Chromium the one way
this project does (tests/system/test_page.py too).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

from anomaly.core.alarms import PRIORITIES, Alarm, AlarmEvent
from api.app import create_app
from api.server import serve
from api.tokens import TokenStore
from bench.table import Row
from gateway.alarms.store import AlarmStore
from gateway.data_dir import store_path
from gateway.site.loader import load_site
from gateway.storage.historian import EmbeddedHistorian
from scadawatch.ports import free_port

CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium keeps trying to reach Google's hosts.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
AIM_MS = 1000  # the list painted within 1 s of the last event
NS = 1_000_000_000
LIST_LIMIT = 1000  # the open alarms the page asks for when it opens
WAIT_MS = 60_000  # the longest any wait in the page may take
ZONES = ("dma1", "dma2", "dma3")
SITE = '[site]\nname = "bench-page"\ndata_dir = "data"\n' + "".join(
    f'[[points]]\ntag = "{z}.{p}"\nkind = "{p}"\nunit = "{u}"\nzone = "{z}"\n'
    for z in ZONES for p, u in (("pressure", "m"), ("flow", "L/s")))

# Notes, in the page, when the last `raise` arrived and when the list first held `target` rows
# (and the frame after: painted). Installed before the page's own script runs.
PROBE = """
window.probe = { lastRaise: 0, target: -1, rows: 0, painted: 0 };
const NativeEventSource = window.EventSource;
window.EventSource = class extends NativeEventSource {
  constructor(url, options) {
    super(url, options);
    this.addEventListener("raise", () => { window.probe.lastRaise = performance.now(); });
  }
};
new MutationObserver(() => {
  const body = document.querySelector("#alarm-table tbody");
  const p = window.probe;
  if (!body || p.rows || body.childElementCount !== p.target) return;
  p.rows = performance.now();
  requestAnimationFrame(() => setTimeout(() => { p.painted = performance.now(); }));
}).observe(document, { childList: true, subtree: true });
"""


def launch(pw: Playwright) -> Browser:
    """Headless Debian Chromium (no browser download), quiet on the network."""
    return pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


@contextlib.contextmanager
def api(folder: Path) -> Iterator[tuple[str, AlarmStore]]:
    """The API over a fresh site's alarm store, in its own event loop thread."""
    (folder / "site.toml").write_text(SITE)
    site = load_site(folder / "site.toml")
    store = AlarmStore(store_path(site.site.data_dir))
    historian = EmbeddedHistorian(site.site.data_dir / "historian.sqlite",
                                  [p.tag for p in site.points])
    port = free_port()
    loop = asyncio.new_event_loop()
    task = loop.create_task(serve(create_app(site, historian, lambda: None, alarm_store=store),
                                  "127.0.0.1", port))

    def run() -> None:
        with contextlib.suppress(asyncio.CancelledError):  # how it is stopped
            loop.run_until_complete(task)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/api/v1/health").status_code == 200:
                    break
            time.sleep(0.05)
        yield url, store
    finally:
        loop.call_soon_threadsafe(task.cancel)
        thread.join(timeout=30)
        loop.close()
        store.close()
        historian.close()


def flood(store: AlarmStore, run: int, n: int, seconds: float) -> list[Alarm]:
    """n raises over `seconds`, in ticks of 10 (one transaction each), on the wall clock."""
    now = time.time_ns()
    alarms = [Alarm(id=f"stuck:{ZONES[i % 3]}.pressure:{now // NS}.{run}.{i}", kind="stuck",
                    tag=f"{ZONES[i % 3]}.pressure", zone=ZONES[i % 3], start_ns=now + i,
                    end_ns=None, priority=PRIORITIES[i % 4], message=f"flood {run}/{i}",
                    value=float(i)) for i in range(n)]
    ticks = max(n // 10, 1)
    start = time.monotonic()
    for k in range(ticks):
        store.apply([AlarmEvent("raise", a) for a in alarms[k * n // ticks:(k + 1) * n // ticks]])
        time.sleep(max(0.0, start + (k + 1) * seconds / ticks - time.monotonic()))
    return alarms


def wait_rows(page: Page, count: int) -> None:
    page.wait_for_function(f"document.querySelectorAll('#alarm-table tbody tr').length === "
                           f"{count}", timeout=WAIT_MS)


def expect_probe(page: Page, target: int) -> dict:
    """The probe's times once the list holds `target` rows and a frame was painted."""
    page.wait_for_function(f"window.probe.target === {target} && window.probe.painted > 0",
                           timeout=WAIT_MS)
    return page.evaluate("window.probe")


@dataclass
class Flood:
    """Milliseconds per run, from the last `raise` event (or the reload) to the list."""

    after_last: list[float] = field(default_factory=list)  # rows in the DOM
    painted: list[float] = field(default_factory=list)  # the frame after
    reload_ms: list[float] = field(default_factory=list)
    kpi_ok: list[bool] = field(default_factory=list)


def measure(runs: int, n: int, seconds: float) -> Flood:
    """`runs` floods of n alarms over `seconds` into the store, timed in the open page."""
    got = Flood()
    with tempfile.TemporaryDirectory(prefix="bench-page-") as tmp, \
            api(Path(tmp)) as (url, store), sync_playwright() as pw:
        token = TokenStore(store.path.parent).create("operator")[1]
        viewer = {"Authorization": f"Bearer {TokenStore(store.path.parent).create('viewer')[1]}"}
        browser = launch(pw)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.add_init_script(PROBE)
        page.goto(f"{url}/#token={token}")
        page.wait_for_function("document.querySelector('#connection').textContent === 'live'",
                               timeout=WAIT_MS)
        for run in range(runs):
            page.evaluate(f"Object.assign(window.probe, {{ target: {n}, rows: 0, painted: 0 }})")
            alarms = flood(store, run, n, seconds)
            probe = expect_probe(page, n)
            got.after_last.append(probe["rows"] - probe["lastRaise"])
            got.painted.append(probe["painted"] - probe["lastRaise"])

            kpis = httpx.get(f"{url}/api/v1/alarms/kpis", headers=viewer).json()
            banner = page.locator("#flood")
            got.kpi_ok.append(kpis["flood"]["active"]
                              and kpis["rate"]["current"] == n * (run + 1)
                              and kpis["priority_mix"]["low"]["count"] == n * (run + 1) // 4
                              and banner.is_visible())

            started = time.perf_counter()
            page.reload()  # the probe is installed again, with no target: set it first
            page.wait_for_function("window.probe !== undefined", timeout=WAIT_MS)
            wait_rows(page, min(n, LIST_LIMIT))
            got.reload_ms.append((time.perf_counter() - started) * 1e3)
            page.wait_for_function("document.querySelector('#connection').textContent === "
                                   "'live'", timeout=WAIT_MS)

            # Out of the list before the next run: cleared, then acknowledged (closed).
            store.apply([AlarmEvent("clear", Alarm(**{**a.__dict__, "end_ns": time.time_ns()}))
                         for a in alarms])
            store.ack_many([a.id for a in alarms], "bench")
            wait_rows(page, 0)
        browser.close()
    return got


def p50_p99(ms: list[float]) -> tuple[float, float]:
    p50, p99 = np.percentile(ms, [50, 99])
    return float(p50), float(p99)


def run(quick: bool) -> list[Row]:
    """Painted after the last event, beside the same rows in the DOM (a floor the paint
    cannot beat: it comes a frame after them)."""
    runs, n, seconds = (2, 200, 2.0) if quick else (5, 1000, 10.0)
    got = measure(runs, n, seconds)
    dom50, dom99 = p50_p99(got.after_last)
    paint50, paint99 = p50_p99(got.painted)
    return [Row(f"control-room page in headless Chromium, {n:,} alarms in {seconds:g} s: last "
                f"`raise` event -> {n:,} rows painted (aim: {AIM_MS:,} ms)",
                f"p50 {paint50:.0f} ms, p99 {paint99:.0f} ms ({runs} runs; flood, KPIs and "
                f"banner right in {sum(got.kpi_ok)}/{runs})",
                f"the same rows in the DOM: p50 {dom50:.0f} ms, p99 {dom99:.0f} ms",
                paint99 / dom99 if dom99 > 0 else None,
                f"python -m bench.page --runs {runs} --alarms {n} --seconds {seconds:g}")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--alarms", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    got = measure(args.runs, args.alarms, args.seconds)
    n = args.alarms

    def fig(label: str, ms: list[float]) -> None:
        p50, p99 = p50_p99(ms)
        print(f"{label:<52} p50 {p50:7.1f} ms  p99 {p99:7.1f} ms  (max {max(ms):.1f})")

    print(f"{n:,} alarms in {args.seconds:g} s into the store, {args.runs} runs, page in "
          "headless Chromium")
    fig(f"last raise event -> {n:,} rows in the list", got.after_last)
    fig(f"last raise event -> {n:,} rows painted", got.painted)
    fig(f"page reload -> {n:,} rows (full render from /alarms)", got.reload_ms)
    print(f"flood on, KPIs right and banner shown: {sum(got.kpi_ok)}/{len(got.kpi_ok)} runs")
    print(f"aim: the list within 1 s of the last event: painted p99 / {AIM_MS} ms = "
          f"{p50_p99(got.painted)[1] / AIM_MS:.3f}")


if __name__ == "__main__":
    main()
