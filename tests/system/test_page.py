"""The control-room page in a real headless Chromium (Debian's `chromium`, driven by
Playwright; no browser download, launched as bench/page.py launches it), against the gateway
and API polling the water simulator.

Screenshots go to test-artifacts/ at the repository root (CI keeps them as artifacts).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import re
import threading
import time
import tomllib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
import tomli_w
from conftest import ServedSite
from playwright.sync_api import Browser, Page, expect, sync_playwright
from support.alarm_helpers import NS, T0, alarm, raised
from support.harness import RUN_LIMIT, auth_headers

from api.times import parse_time
from api.tokens import Role
from bench.page import launch
from gateway.alarms.store import AlarmStore
from gateway.data_dir import store_path
from gateway.site.loader import load_site
from gateway.site.model import Site
from scadawatch.commands.serve import serve as run_gateway
from scadawatch.ports import free_port
from simulators.sitefile import write_site_file

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
BURST_AT = 40 * 60.0  # simulated seconds: inside the scenario's burst below

SCENARIO = {
    "description": "A main bursts in dma1: its inflow goes past the meter's range.",
    "water": {"events": [{"kind": "burst", "target": "dma1", "start": "30min",
                          "duration": "2h", "size": 200.0}]},
}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = launch(p)
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
    # Readings in the historian within a second (default 10 s), for tests that read at once.
    doc["historian"] = {"flush_interval": 1.0}
    # Names too long for a card, and more points in dma1 than a card lists (never polled).
    doc["points"] += [{"tag": f"dma1.district-meter-on-the-old-cast-iron-main-{i}.pressure",
                       "kind": "pressure", "unit": "m", "zone": "dma1", "lo": 0.0, "hi": 100.0}
                      for i in range(6)]
    path.write_text(tomli_w.dumps(doc))
    site = load_site(path)
    with run_in_thread(site, free_port()) as url:
        yield url, served, site


@pytest.fixture
def store(control_room) -> Iterator[AlarmStore]:
    """The site's alarm store, opened beside the gateway's as a second process would: engine
    events applied here reach the page through the API's stream."""
    _, _, site = control_room
    s = AlarmStore(store_path(site.site.data_dir))
    yield s
    s.close()


def open_page(browser: Browser, url: str, site: Site, role: Role = "operator") -> Page:
    token = auth_headers(site.site.data_dir, role)["Authorization"].split()[-1]
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(f"{url}/#token={token}")
    expect(page.locator("#connection")).to_have_text("live", timeout=RUN_LIMIT * 1000)
    return page


def alarm_row(page: Page, alarm_id: str):  # -> Locator
    return page.locator(f"tr[data-alarm-id='{alarm_id}']")


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


def test_any_point_is_three_clicks_from_the_overview(browser: Browser, control_room,
                                                     store: AlarmStore) -> None:
    url, _, site = control_room
    stuck = alarm("stuck", "dma2.j237.pressure", scope="tag")
    store.apply([raised(stuck)])
    page = open_page(browser, url, site)
    page.locator(".zone[data-zone=dma2]").click()
    page.locator("#zone-points tr[data-tag='dma2.j237.pressure']").click()
    expect(page.locator("#trend-tag")).to_contain_text("dma2.j237.pressure [m]")
    expect(page.locator("#chart canvas")).to_have_count(1)
    # The point's detail holds its alarm history.
    history = page.locator("#point-alarms tbody tr")
    expect(history).to_have_count(1)
    expect(history).to_contain_text(stuck.message)
    page.screenshot(path=ARTIFACTS / "page-trend.png", full_page=True)


# Collects the page's Content-Security-Policy violations in window.violations.
WATCH_VIOLATIONS = ("window.violations = []; document.addEventListener("
                    "'securitypolicyviolation', (e) => window.violations.push("
                    "`${e.violatedDirective} ${e.blockedURI} ${e.sourceFile}:${e.lineNumber}`));")


def test_the_page_runs_under_its_content_security_policy(browser: Browser, control_room,
                                                        store: AlarmStore) -> None:
    """The API sends a strict Content-Security-Policy (scripts and styles from itself only,
    none inline, no framing): the page, uPlot's trend and the range bars included, runs
    without a violation."""
    url, _, site = control_room
    store.apply([raised(alarm("stuck", "dma2.j237.pressure", scope="tag"))])
    token = auth_headers(site.site.data_dir, "operator")["Authorization"].split()[-1]
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.add_init_script(WATCH_VIOLATIONS)
    answer = page.goto(f"{url}/#token={token}")
    assert answer is not None and answer.headers["x-frame-options"] == "DENY"
    assert "script-src 'self'" in answer.headers["content-security-policy"]
    expect(page.locator("#connection")).to_have_text("live", timeout=RUN_LIMIT * 1000)
    page.locator(".zone[data-zone=dma2]").click()
    page.locator("#zone-points tr[data-tag='dma2.j237.pressure']").click()
    expect(page.locator("#chart canvas")).to_have_count(1)
    expect(page.locator("#point-alarms tbody tr")).to_have_count(1)
    assert page.evaluate("window.violations") == []


def test_a_shelved_alarm_leaves_the_list_and_returns_when_unshelved(
        browser: Browser, control_room, store: AlarmStore) -> None:
    url, _, site = control_room
    page = open_page(browser, url, site)
    stuck = alarm("stuck", "dma1.j10.pressure", scope="tag")
    store.apply([raised(stuck)])
    row = alarm_row(page, stuck.id)
    expect(row).to_be_visible()

    row.locator("button[data-action=shelve]").click()
    dialog = page.locator("#shelve-dialog")
    expect(dialog).to_be_visible()
    dialog.locator("input[name=reason]").fill("sensor being replaced")
    dialog.locator("select[name=duration]").select_option("4h")
    dialog.locator("#shelve-confirm").click()
    expect(row).to_have_count(0)
    page.screenshot(path=ARTIFACTS / "page-shelved.png", full_page=True)

    admin = {"base_url": f"{url}/api/v1", "headers": auth_headers(site.site.data_dir)}
    with httpx.Client(**admin) as http:
        got = http.get(f"/alarms/{stuck.id}").json()
    assert (got["alarm"]["shelved"], got["alarm"]["shelve_reason"]) == (
        True, "sensor being replaced")
    (shelved,) = [e for e in got["journal"] if e["transition"] == "shelve"]
    until, since = (parse_time(got["alarm"]["shelved_until"], 0), parse_time(shelved["time"], 0))
    assert until - since == pytest.approx(4 * 3600 * NS, abs=NS)

    # Unshelved (by hand here; the same event when the shelf runs out): back in the list.
    with httpx.Client(**admin) as http:
        assert http.post(f"/alarms/{stuck.id}/unshelve").status_code == 200
    expect(row).to_be_visible()


def test_an_operator_releases_a_chattering_alarm_from_its_row(
        browser: Browser, control_room, store: AlarmStore) -> None:
    url, _, site = control_room
    spike = alarm("spike", "dma2.j251.pressure", scope="tag")
    held = replace(spike, id=f"chattering:spike:dma2.j251.pressure:{T0 // NS}",
                   kind="chattering", message="dma2.j251.pressure: the spike alarm chatters")
    store.apply([raised(held)])
    page = open_page(browser, url, site)
    row = alarm_row(page, held.id)
    expect(row.locator("button[data-action=release]")).to_have_count(1)
    row.locator("button[data-action=release]").click()
    expect(page.locator("#notice")).to_contain_text("Released")
    with httpx.Client(base_url=f"{url}/api/v1",
                      headers=auth_headers(site.site.data_dir, "viewer")) as http:
        journal = http.get(f"/alarms/{held.id}").json()["journal"]
    assert [e["transition"] for e in journal] == ["raise", "release"]


@pytest.mark.parametrize(("role", "may_act"), [("viewer", False), ("operator", True)])
def test_the_actions_offered_follow_the_role(browser: Browser, control_room, store: AlarmStore,
                                             role: Role, may_act: bool) -> None:
    url, _, site = control_room
    leak = alarm("leak", "dma3")
    store.apply([raised(leak)])
    page = open_page(browser, url, site, role)
    row = alarm_row(page, leak.id)
    expect(row).to_be_visible()
    expect(page.locator("#who")).to_contain_text(f"({role})")
    count = 1 if may_act else 0
    expect(row.locator("button[data-action=ack]")).to_have_count(count)
    expect(row.locator("button[data-action=shelve]")).to_have_count(count)
    expect(page.locator("#ack-visible")).to_be_visible(visible=may_act)


def test_the_flood_banner_follows_the_kpis(browser: Browser, control_room,
                                           store: AlarmStore) -> None:
    url, _, site = control_room
    page = open_page(browser, url, site)
    banner = page.locator("#flood")
    expect(banner).to_be_hidden()
    # One more than the flood threshold (10 in 10 minutes), each a different zone's leak.
    flood = [alarm("leak", f"zone{i}", start_ns=T0 + i * NS) for i in range(11)]
    store.apply([raised(a) for a in flood])
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("11 alarms in the last 10 minutes")
    expect(page.locator("#alarm-table tr[data-alarm-id^='leak:zone']")).to_have_count(11)
    page.screenshot(path=ARTIFACTS / "page-flood.png", full_page=True)
    kpis = httpx.get(f"{url}/api/v1/alarms/kpis",
                     headers=auth_headers(site.site.data_dir, "viewer")).json()
    assert kpis["flood"]["active"] and kpis["rate"]["current"] == 11


# --- what an operator must never have to guess ---------------------------------------------

def test_an_empty_alarm_list_says_so_and_offers_nothing_to_acknowledge(
        browser: Browser, control_room) -> None:
    url, _, site = control_room
    page = open_page(browser, url, site)
    expect(page.locator("#no-alarms")).to_be_visible()
    expect(page.locator("#no-alarms")).to_contain_text("No alarms")
    expect(page.locator("#alarm-table")).to_be_hidden()
    expect(page.locator("#ack-visible")).to_be_disabled()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "page-no-alarms.png", full_page=True)


def test_the_signed_out_page_says_how_to_get_a_token(browser: Browser, control_room) -> None:
    url, _, _ = control_room
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(url)
    login = page.locator("#login")
    expect(login).to_be_visible()
    expect(login).to_contain_text("scadawatch token create --role operator")
    expect(login).to_contain_text("scadawatch demo")
    expect(page.locator("link[rel=icon]")).to_have_attribute("href", "favicon.svg")
    assert httpx.get(f"{url}/favicon.svg").headers["content-type"].startswith("image/svg")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "page-signed-out.png", full_page=True)


CARDS = """() => [...document.querySelectorAll(".zone")].map((card) => ({
  zone: card.dataset.zone,
  overflows: card.scrollWidth > card.clientWidth + 1,
  names: [...card.querySelectorAll(".kv .name")].map((e) => e.textContent),
  values_on_two_lines: [...card.querySelectorAll(".kv .value")]
    .filter((e) => e.getClientRects().length > 1 || e.offsetHeight > 1.6 * parseFloat(
      getComputedStyle(e).lineHeight || "18")).length,
  more: card.querySelector(".more")?.textContent || "",
  noData: card.querySelector(".no-data")?.textContent || null,
}))"""


def test_zone_cards_fit_count_their_points_and_show_a_device_in_comms(
        browser: Browser, control_room, store: AlarmStore) -> None:
    """Long names are cut inside the card (whole in the tooltip), a value and its unit stay
    on one line, a card lists its points or says how many more it has; a card whose device
    is in `comms` says that it has no data from it."""
    url, _, site = control_room
    dma2 = tuple(p.tag for p in site.points if p.device == "water-dma2")
    comms = dataclasses.replace(alarm("comms", "water-dma2", scope="device"),
                                device="water-dma2", zone="dma2", tags=dma2,
                                message="water-dma2: every read failing, no good reading "
                                        "for 3 s")
    store.apply([raised(comms)])
    page = open_page(browser, url, site)
    page.set_viewport_size({"width": 1000, "height": 900})
    expect(page.locator(".zone[data-zone=dma2] .no-data")).to_contain_text("water-dma2")
    expect(page.locator(".zone[data-zone=dma1] .kv .name").first).to_be_visible()
    cards = {c["zone"]: c for c in page.evaluate(CARDS)}
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "page-cards.png", full_page=True)
    points = httpx.get(f"{url}/api/v1/points",
                       headers=auth_headers(site.site.data_dir, "viewer")).json()["points"]
    for zone, card in cards.items():
        assert not card["overflows"] and card["values_on_two_lines"] == 0, card
        mine = [p for p in points if (p["zone"] or "") == zone]
        inflows = sum(p["role"] == "inflow" for p in mine)
        listed = len(card["names"]) - (inflows > 0)  # the inflow row sums the inflow meters
        more = int(card["more"].split()[1]) if card["more"] else 0
        assert listed + inflows + more == len(mine), (zone, card)
    assert cards["dma1"]["more"], "dma1 has more points than a card lists"
    assert [z for z, c in cards.items() if c["noData"]] == ["dma2"]


def test_a_point_shows_its_raw_readings_and_its_devices_comms_alarms(
        browser: Browser, control_room, store: AlarmStore) -> None:
    """The last hour of a point polled for seconds: every reading, not buckets, on a y-range
    around them (the frozen simulator serves a flat line); its alarm history holds its
    device's `comms` alarm beside its own."""
    url, _, site = control_room
    tag = "dma2.j237.pressure"
    dma2 = tuple(p.tag for p in site.points if p.device == "water-dma2")
    comms = dataclasses.replace(alarm("comms", "water-dma2", scope="device"),
                                device="water-dma2", zone="dma2", tags=dma2)
    store.apply([raised(comms), raised(alarm("stuck", tag, scope="tag"))])
    # The historian commits its first readings at once, then each second: wait for a second
    # commit, so the trend has readings (plural) to draw.
    headers = auth_headers(site.site.data_dir, "viewer")
    deadline = time.monotonic() + RUN_LIMIT
    while len(httpx.get(f"{url}/api/v1/history", params={"tag": tag}, headers=headers
                        ).json()["ts"]) < 2:
        assert time.monotonic() < deadline, f"{tag}: fewer than 2 readings stored"
        time.sleep(0.2)
    page = open_page(browser, url, site)
    page.locator(".zone[data-zone=dma2]").click()
    page.locator(f"#zone-points tr[data-tag='{tag}']").click()
    page.locator("#trend-range").select_option("1h")
    chart = page.locator("#chart")
    expect(page.locator("#trend-how")).to_contain_text("readings, last 1h")
    expect(chart).to_have_attribute("data-mode", "raw")
    expect(chart).to_have_attribute("data-y-min", re.compile(r"\d"))
    drawn = int(chart.get_attribute("data-points") or 0)
    latest = httpx.get(f"{url}/api/v1/latest", params={"tag": tag},
                       headers=auth_headers(site.site.data_dir, "viewer")).json()
    value = latest["readings"][0]["value"]
    low, high = (float(chart.get_attribute(f"data-y-{k}") or "nan") for k in ("min", "max"))
    assert drawn >= 2 and low < value < high and 1.0 <= high - low <= 10.0, (low, high, value)
    history = page.locator("#point-alarms tbody tr")
    expect(history).to_have_count(2)
    expect(page.locator("#point-alarms")).to_contain_text("comms on water-dma2")
    expect(page.locator("#point-alarms")).to_contain_text(f"stuck on {tag}")
    page.screenshot(path=ARTIFACTS / "page-point.png", full_page=True)


def test_a_late_answer_for_an_earlier_range_does_not_replace_the_range_picked(
        browser: Browser, control_room) -> None:
    """The trend's answer for the range first shown (6 h) held back until the operator has
    picked 1 h and seen it: when it comes in at last, the chart stays on 1 h."""
    url, _, site = control_room
    tag = "dma2.j237.pressure"
    page = open_page(browser, url, site)
    held: list = []
    page.route("**/api/v1/history?*", lambda route: held.append(route)
               if "start=-6h" in route.request.url else route.continue_())
    page.locator(".zone[data-zone=dma2]").click()
    page.locator(f"#zone-points tr[data-tag='{tag}']").click()
    expect(page.locator("#trend-how")).to_have_text("")
    page.locator("#trend-range").select_option("1h")
    expect(page.locator("#trend-how")).to_contain_text("last 1h")
    assert len(held) == 1, "the 6 h request was not held"
    with page.expect_response(lambda r: "start=-6h" in r.url) as late:
        held[0].continue_()
    late.value.finished()
    page.wait_for_timeout(300)  # the page's handler of the late answer runs after its body
    expect(page.locator("#trend-how")).to_contain_text("last 1h")


def test_the_api_documentation_works_offline(browser: Browser, control_room) -> None:
    """/docs: Swagger UI from the package itself; any request off this host would fail."""
    url, _, _ = control_room
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url))
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(url)
               else route.abort())
    page.add_init_script(WATCH_VIOLATIONS)
    page.goto(f"{url}/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("scadawatch")
    expect(page.locator(".opblock-summary-path").first).to_be_visible()
    assert asked and all(u.startswith(url) for u in asked), asked
    assert page.evaluate("window.violations") == []  # under the page's strict policy
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "page-docs.png")
