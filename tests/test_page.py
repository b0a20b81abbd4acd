"""The control-room page in a real headless Chromium (Debian's `chromium`, driven by
Playwright; no browser download), against the gateway and API polling the water simulator.

Screenshots go to test-artifacts/ at the repository root (CI keeps them as artifacts).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import tomli_w
from conftest import ServedSite
from harness import RUN_LIMIT, auth_headers
from modbus_servers import free_port
from playwright.sync_api import Browser, Page, expect, sync_playwright

from gateway.config import Site, load_site
from scadawatch.serve import serve as run_gateway
from simulators.sitefile import write_site_file

CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium keeps trying to reach Google's hosts.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
BURST_AT = 40 * 60.0  # simulated seconds: inside the scenario's burst below

SCENARIO = {
    "description": "A main bursts in dma1: its inflow goes past the meter's range.",
    "water": {"events": [{"kind": "burst", "target": "dma1", "start": "30min",
                          "duration": "2h", "size": 200.0}]},
}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@contextlib.contextmanager
def run_in_thread(site: Site, port: int) -> Iterator[str]:
    """`scadawatch run` (gateway + detector + API) on its own event loop thread."""
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    done = concurrent.futures.Future[None]()

    def thread() -> None:
        try:
            loop.run_until_complete(run_gateway(site, gateway=True, api=True, port=port,
                                                stop=stop))
            done.set_result(None)
        except BaseException as e:
            done.set_exception(e)

    t = threading.Thread(target=thread, daemon=True)
    t.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + RUN_LIMIT
        while time.monotonic() < deadline and not done.done():
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/api/v1/health").status_code == 200:
                    break
            time.sleep(0.1)
        yield url
    finally:
        loop.call_soon_threadsafe(stop.set)
        t.join(timeout=RUN_LIMIT)
        loop.close()
        if done.done() and done.exception():
            raise done.exception()  # type: ignore[misc]


@pytest.fixture
def control_room(serve_site, scenario_file, tmp_path: Path) -> Iterator[tuple[str, ServedSite,
                                                                              Site]]:
    served = serve_site("water", scenario_file(SCENARIO), speed=0.0)
    path = tmp_path / "site.toml"
    write_site_file(served.site, path, host="127.0.0.1", modbus_port=served.modbus_port,
                    opcua_port=0, data_dir=str(tmp_path / "data"))
    doc = tomllib.loads(path.read_text())
    for device in doc["devices"]:
        device["poll_interval"] = 0.2
    # One-second ticks so that a limit is judged at once; the simulator's clock is frozen.
    doc["anomaly"] = {"interval": 1.0, "lateness": 0.3}
    path.write_text(tomli_w.dumps(doc))
    site = load_site(path)
    with run_in_thread(site, free_port()) as url:
        yield url, served, site


def open_page(browser: Browser, url: str, site: Site) -> Page:
    token = auth_headers(site.site.data_dir, "operator")["Authorization"].split()[-1]
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(f"{url}/#token={token}")
    expect(page.locator("#connection")).to_have_text("live", timeout=RUN_LIMIT * 1000)
    return page


def test_an_injected_fault_appears_live_and_is_acknowledged(browser: Browser, control_room,
                                                            tmp_path: Path) -> None:
    url, served, site = control_room
    page = open_page(browser, url, site)
    expect(page.locator(".zone[data-zone=dma1]")).to_be_visible()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "page-before-fault.png", full_page=True)

    # The burst reverses dma1's outlet beyond its meter's range: a limit alarm in dma1.
    row = page.locator("tr[data-alarm-id^='limit:dma1.']")
    expect(row).to_have_count(0)
    served.call(served.server.publish(BURST_AT))  # the fault is now on the wire
    injected = time.monotonic()
    expect(row).to_be_visible(timeout=RUN_LIMIT * 1000)
    latency = time.monotonic() - injected
    print(f"alarm on the page {latency:.2f} s after the fault was served")
    expect(row).to_have_class("unacked")
    expect(row.locator(".prio")).to_have_text("MEDIUM")
    page.screenshot(path=ARTIFACTS / "page-alarm.png", full_page=True)

    row.locator("button[data-action=ack]").click()
    expect(row.locator("td.state")).to_have_text("active acknowledged")
    alarm_id = row.get_attribute("data-alarm-id")
    headers = auth_headers(site.site.data_dir, "viewer")
    got = httpx.get(f"{url}/api/v1/alarms/{alarm_id}", headers=headers).json()
    assert got["alarm"]["state"] == "active-acknowledged"
    assert got["alarm"]["acked_by"]
    page.screenshot(path=ARTIFACTS / "page-acknowledged.png", full_page=True)


def test_any_point_is_three_clicks_from_the_overview(browser: Browser, control_room) -> None:
    url, _, site = control_room
    page = open_page(browser, url, site)
    page.locator(".zone[data-zone=dma2]").click()
    page.locator("#zone-points tr[data-tag='dma2.j237.pressure']").click()
    expect(page.locator("#trend-tag")).to_contain_text("dma2.j237.pressure [m]")
    expect(page.locator("#chart canvas")).to_have_count(1)
    page.screenshot(path=ARTIFACTS / "page-trend.png", full_page=True)
