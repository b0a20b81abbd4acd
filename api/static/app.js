// The control-room page: alarm list (live through server-sent events), zone overview and a
// point's detail (trend, alarm history). Plain ES module, no build step; uPlot draws the trend.
const API = "/api/v1";
const PRIORITY_RANK = { critical: 0, high: 1, medium: 2, low: 3 };
const LIVE_POLL_MS = 2000;
const KPI_POLL_MS = 10_000;
const KPI_AFTER_RAISE_MS = 500;  // raises arrive in bursts: one KPI call per burst
const LOST_AFTER_ERRORS = 3;  // failed reconnects before the status says "lost"
const REOPEN_MS = 5000;  // after the browser gives up on the stream (e.g. a 5xx)
const ALARM_EVENTS = ["raise", "clear", "ack", "shelve", "unshelve", "release", "comment",
                      "suppress", "unsuppress"];
const CARD_ROWS = 8;  // rows of a zone card; the rest is counted ("+ 12 more points")
const NO_ZONE = "";  // the card of the points of no zone (a plant, a substation)
const RANGE_SECONDS = { "1h": 3600, "6h": 6 * 3600, "24h": 24 * 3600 };

const $ = (sel) => document.querySelector(sel);
const state = {
  token: null, role: null, points: [], byTag: new Map(), latest: new Map(),
  alarms: new Map(), rows: new Map(), renderQueued: false, kpiTimer: null,
  zone: null, trendTag: null, trendAsked: 0, chart: null, trendData: [[], []],
  stream: null, lastEventId: null, streamErrors: 0, timers: [],
};
const canAct = () => state.role !== null && state.role !== "viewer";

// ---- auth: the token comes from the link `scadawatch demo` prints (#token=...) or the form.
function takeTokenFromLink() {
  const m = location.hash.match(/token=([^&]+)/);
  if (m) {
    sessionStorage.setItem("scadawatch-token", decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem("scadawatch-token");
}

async function call(method, path, body) {
  const res = await fetch(API + path, {
    method,
    headers: { Authorization: `Bearer ${state.token}`,
               ...(body ? { "Content-Type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  if (res.status === 401) { signOut("token refused: sign in again"); throw new Error("401"); }
  if (!res.ok) {
    const detail = (await res.json().catch(() => ({}))).detail || res.statusText;
    throw new Error(res.status === 403 ? `not allowed: ${detail}` : detail);
  }
  return res.json();
}

function signOut(message) {
  sessionStorage.removeItem("scadawatch-token");
  if (state.stream) state.stream.close();
  state.timers.forEach(clearInterval);
  state.timers = [];
  $("#main").hidden = true;
  $("#login").hidden = false;
  $("#login-error").textContent = message || "";
}

// What the server refused (a 409: already acknowledged...), where the operator sees it.
function notify(message) {
  const box = $("#notice");
  box.textContent = message;
  box.hidden = !message;
}

// ---- formatting
const fmtTime = (iso) => (iso ? iso.replace("T", " ").replace(/\.\d+Z$|Z$/, "") : "");
function fmtValue(v, unit) {
  if (v === null || v === undefined) return "—";
  const s = Math.abs(v) >= 1000 ? v.toFixed(0) : Number(v.toPrecision(4)).toString();
  return unit ? `${s} ${unit}` : s;
}
function el(tag, props = {}, ...children) {
  const e = Object.assign(document.createElement(tag), props);
  e.append(...children);
  return e;
}
function rangeBar(value, lo, hi) {
  const bar = el("div", { className: "range", title: `range ${lo} … ${hi}` });
  if (value === null || lo === null || hi === null || hi <= lo) return bar;
  const x = (value - lo) / (hi - lo);
  if (x < 0 || x > 1) bar.classList.add("out");
  bar.append(el("i", { style: `left: calc(${Math.min(Math.max(x, 0), 1) * 100}% - 1px)` }));
  return bar;
}
const prioBadge = (priority, text) =>
  el("span", { className: `prio prio-${priority}`, textContent: text });

// ---- alarms
const isUnacked = (a) => /unack/.test(a.state || "");
const isActive = (a) => a.end === null || a.end === undefined;
const isShown = (a, showClosed) => (showClosed || a.state !== "closed") && !a.shelved
  && !a.suppressed;
function alarmOrder(a, b) {
  return (PRIORITY_RANK[a.priority] - PRIORITY_RANK[b.priority])
    || (b.start || "").localeCompare(a.start || "") || a.id.localeCompare(b.id);
}
function visibleAlarms() {
  const showClosed = $("#show-closed").checked;
  return [...state.alarms.values()].filter((a) => isShown(a, showClosed)).sort(alarmOrder);
}
function limitOrKind(a, unit) {
  return typeof a.limit === "number" ? `${a.kind}: ${fmtValue(a.limit, unit)}` : a.kind;
}
// One row per alarm, rebuilt only when the alarm changed (its last event id).
function alarmRow(a) {
  const cached = state.rows.get(a.id);
  if (cached && cached.dataset.eventId === String(a.event_id)) return cached;
  const unit = state.byTag.get(a.tag)?.unit || "";
  const where = a.tag || a.zone || (a.tags || []).join(", ");
  const place = a.tag && state.byTag.has(a.tag)
    ? el("button", { type: "button", className: "link", textContent: where,
                     title: "show its trend and alarm history", onclick: () => selectTag(a.tag) })
    : where;
  const actions = el("td", { className: "actions" });
  if (canAct()) {
    if (isUnacked(a)) {
      const ack = el("button", { type: "button", textContent: "Ack",
                                 onclick: () => acknowledge([a.id]) });
      ack.dataset.action = "ack";
      actions.append(ack, " ");
    }
    if (a.kind === "chattering" && isActive(a)) {  // it holds an alarm back (ISA-18.2)
      const release = el("button", { type: "button", textContent: "Release",
                                     title: "annunciate the alarm it holds back again",
                                     onclick: () => releaseHeld(a) });
      release.dataset.action = "release";
      actions.append(release);
    } else if (a.state !== "closed") {
      const shelve = el("button", { type: "button", textContent: "Shelve",
                                    onclick: () => askShelve(a) });
      shelve.dataset.action = "shelve";
      actions.append(shelve);
    }
  }
  const tr = el("tr", {},
    el("td", {}, prioBadge(a.priority, a.priority.toUpperCase())),
    el("td", { className: "time", textContent: fmtTime(a.start) }),
    el("td", {}, place),
    el("td", { textContent: a.message }),
    el("td", { className: "num", textContent: fmtValue(a.value, unit) }),
    el("td", { textContent: limitOrKind(a, unit) }),
    el("td", { className: "state", textContent: (a.state || "").replaceAll("-", " ") }),
    actions);
  tr.dataset.alarmId = a.id;
  tr.dataset.eventId = String(a.event_id);
  if (isUnacked(a)) tr.classList.add("unacked");
  if (!isActive(a)) tr.classList.add("cleared");
  state.rows.set(a.id, tr);
  return tr;
}
// A flood brings hundreds of events a second: they are applied to `state.alarms` at once and
// drawn once per frame.
function scheduleRender() {
  if (state.renderQueued) return;
  state.renderQueued = true;
  requestAnimationFrame(() => { state.renderQueued = false; renderAlarms(); });
}
function renderAlarms() {
  const alarms = visibleAlarms();
  const rows = alarms.map(alarmRow);
  const body = $("#alarm-table tbody");
  const same = rows.length === body.children.length
    && rows.every((tr, i) => body.children[i] === tr);
  if (!same) body.replaceChildren(...rows);
  for (const id of state.rows.keys()) if (!state.alarms.has(id)) state.rows.delete(id);
  $("#no-alarms").hidden = rows.length > 0;
  $("#alarm-table").hidden = rows.length === 0;
  const unacked = alarms.filter(isUnacked).length;
  $("#alarm-count").textContent = `(${rows.length} shown, ${unacked} unacknowledged)`;
  $("#ack-visible").disabled = unacked === 0;
  renderZones();
}
// Keep the newest of what the list call and the stream told (by the alarm's last event id).
function remember(alarm) {
  const known = state.alarms.get(alarm.id);
  if (known && known.event_id > alarm.event_id) return;
  state.alarms.set(alarm.id, alarm);
  scheduleRender();
}
async function acknowledge(ids) {
  if (!ids.length) return;
  try {
    if (ids.length === 1) {
      remember(await call("POST", `/alarms/${encodeURIComponent(ids[0])}/ack`, {}));
      notify("");
      return;
    }
    const result = await call("POST", "/alarms/ack", { ids });
    result.acked.forEach(remember);
    const why = result.skipped[0]?.reason;
    notify(result.skipped.length ? `${result.skipped.length} not acknowledged: ${why}` : "");
  } catch (e) { notify(`Acknowledge refused: ${e.message}`); }
}
async function releaseHeld(alarm) {
  try {
    remember(await call("POST", `/alarms/${encodeURIComponent(alarm.id)}/release`, {}));
    notify("Released: the gateway clears the chattering alarm in a moment");
  } catch (e) { notify(`Release refused: ${e.message}`); }
}
function askShelve(alarm) {
  const dialog = $("#shelve-dialog");
  $("#shelve-what").textContent = alarm.tag || alarm.zone || alarm.id;
  $("#shelve-form").reset();
  dialog.returnValue = "";  // Escape keeps the last value: it must not shelve again
  dialog.onclose = async () => {
    if (dialog.returnValue !== "shelve") return;
    const form = new FormData($("#shelve-form"));
    try {
      remember(await call("POST", `/alarms/${encodeURIComponent(alarm.id)}/shelve`,
                          { duration: form.get("duration"), reason: form.get("reason") }));
      notify("");
    } catch (e) { notify(`Shelve refused: ${e.message}`); }
  };
  dialog.showModal();
}
async function loadAlarms(which = "open") {
  const body = await call("GET", `/alarms?state=${which}&limit=1000`);
  body.alarms.forEach(remember);
}

// ---- the live stream; EventSource reconnects by itself and resumes with Last-Event-ID.
function setConnection(name, text) {
  const connection = $("#connection");
  connection.dataset.state = name;
  connection.textContent = text;
}
function openStream() {
  if (state.stream) state.stream.close();
  const resume = state.lastEventId === null ? "" : `&last_event_id=${state.lastEventId}`;
  const url = `${API}/alarms/stream?access_token=${encodeURIComponent(state.token)}${resume}`;
  const stream = (state.stream = new EventSource(url));
  stream.onopen = () => { state.streamErrors = 0; setConnection("live", "live"); };
  stream.onerror = () => {
    state.streamErrors += 1;
    if (stream.readyState === EventSource.CLOSED) {  // the browser gave up: we try again
      setConnection("lost", "connection lost: retrying");
      setTimeout(() => state.stream === stream && openStream(), REOPEN_MS);
    } else if (state.streamErrors >= LOST_AFTER_ERRORS) {
      setConnection("lost", "connection lost: reconnecting");
    } else {
      setConnection("reconnecting", "reconnecting");
    }
  };
  const onAlarm = (ev) => {
    state.lastEventId = ev.lastEventId || state.lastEventId;
    const alarm = JSON.parse(ev.data);
    if (!alarm || !alarm.id || !alarm.kind) return;  // e.g. a zone put out of service
    remember(alarm);
    if (ev.type === "raise") kpisSoon();
    if (state.trendTag && (alarm.tag === state.trendTag
                           || (alarm.tags || []).includes(state.trendTag))) {
      loadPointAlarms(state.trendTag);
    }
  };
  for (const name of ALARM_EVENTS) stream.addEventListener(name, onAlarm);
}

// ---- flood banner (EEMUA 191: more than 10 alarms in 10 minutes), from /alarms/kpis
function renderFlood(kpis) {
  const flood = kpis.flood || {};
  $("#flood").hidden = !flood.active;
  $("#flood-rate").textContent = `${kpis.rate?.current ?? "?"} alarms in the last `
    + `${Math.round((kpis.window_seconds || 600) / 60)} minutes`
    + (flood.since ? ` (since ${fmtTime(flood.since)})` : "");
}
async function pollKpis() {
  try { renderFlood(await call("GET", "/alarms/kpis?start=-1h")); } catch (e) { console.error(e); }
}
function kpisSoon() {
  if (state.kpiTimer) return;
  state.kpiTimer = setTimeout(() => { state.kpiTimer = null; pollKpis(); }, KPI_AFTER_RAISE_MS);
}

// ---- overview: zones, then a zone's points, then a point's detail (three clicks)
const zoneName = (zone) => (zone === NO_ZONE ? "other points" : zone);
const pointsOf = (zone) => state.points.filter((p) => (p.zone || NO_ZONE) === zone);
// What a card shows first: the zone's inflow, then pressures, levels, voltages, loadings.
const summarised = (p) => ["pressure", "level", "voltage"].includes(p.kind)
  || (p.unit === "%" && /loading/.test(p.tag));
function zoneSummary(zone) {
  const pts = pointsOf(zone);
  const inflow = pts.filter((p) => p.role === "inflow");
  const rows = [];
  if (inflow.length) {
    const vals = inflow.map((p) => state.latest.get(p.tag)?.value);
    const sum = vals.every((v) => typeof v === "number") ? vals.reduce((s, v) => s + v, 0) : null;
    rows.push({ name: "inflow", title: inflow.map((p) => p.tag).join(" + "),
                value: fmtValue(sum, inflow[0].unit), bar: null });
  }
  const rest = pts.filter((p) => p.role !== "inflow" && p.kind !== "status");
  const listed = [...rest.filter(summarised), ...rest.filter((p) => !summarised(p))]
    .slice(0, CARD_ROWS - rows.length);
  for (const p of listed) {
    const r = state.latest.get(p.tag);
    rows.push({ name: zone === NO_ZONE ? p.tag : p.tag.replace(`${zone}.`, ""), title: p.tag,
                value: fmtValue(r?.value ?? null, p.unit),
                bar: rangeBar(r?.value ?? null, p.lo, p.hi) });
  }
  return { rows, more: pts.length - inflow.length - listed.length };
}
// Devices whose `comms` alarm is active, per tag they cover: their points have no data.
function devicesInComms() {
  const out = new Map();
  for (const a of state.alarms.values()) {
    if (a.kind !== "comms" || !isActive(a)) continue;
    for (const t of a.tags || (a.tag ? [a.tag] : [])) out.set(t, a.device || a.tag);
  }
  return out;
}
// A zone's worst active alarm, by shape, colour and text (one colour per priority).
function zoneAlarmBadge(zone) {
  const active = [...state.alarms.values()]
    .filter((a) => (a.zone || NO_ZONE) === zone && isActive(a) && isShown(a, false))
    .sort(alarmOrder);
  if (!active.length) return null;
  return prioBadge(active[0].priority, `${active.length} alarm${active.length > 1 ? "s" : ""}`);
}
function renderZones() {
  if (state.zone !== null) return renderZonePoints();
  const zones = [...new Set(state.points.map((p) => p.zone || NO_ZONE))]
    .sort((a, b) => (a === NO_ZONE) - (b === NO_ZONE) || a.localeCompare(b));
  const comms = devicesInComms();
  $("#zones").replaceChildren(...zones.map((z) => {
    const badge = zoneAlarmBadge(z);
    const card = el("div", { className: "zone", tabIndex: 0, onclick: () => selectZone(z) },
                    el("h3", { textContent: zoneName(z) }, ...(badge ? [" ", badge] : [])));
    card.dataset.zone = z;
    if (badge) card.classList.add("in-alarm");
    const silent = [...new Set(pointsOf(z).map((p) => comms.get(p.tag)).filter(Boolean))];
    if (silent.length) {
      card.classList.add("no-data-card");
      card.append(el("p", { className: "no-data",
                            textContent: `no data from ${silent.join(", ")} (comms)` }));
    }
    const { rows, more } = zoneSummary(z);
    const kv = el("div", { className: "kv" });
    for (const { name, title, value, bar } of rows) {
      kv.append(el("span", { className: "name", textContent: name, title }),
                el("span", { className: "value", textContent: value }), bar || el("span"));
    }
    card.append(kv);
    if (more > 0) {
      card.append(el("div", { className: "more quiet",
                              textContent: `+ ${more} more point${more > 1 ? "s" : ""}` }));
    }
    return card;
  }));
}
function selectZone(zone) {
  state.zone = zone;
  $("#overview-title").textContent = zone === NO_ZONE ? "Other points" : `Zone ${zone}`;
  $("#back").hidden = false;
  $("#zones").hidden = true;
  $("#zone-points").hidden = false;
  renderZonePoints();
}
function renderZonePoints() {
  const comms = devicesInComms();
  const rows = pointsOf(state.zone).map((p) => {
    const r = state.latest.get(p.tag) || {};
    const silent = comms.get(p.tag);
    const quality = silent ? `no data: ${silent} (comms)` : r.stale ? "stale" : (r.quality || "—");
    const tr = el("tr", { tabIndex: 0, onclick: () => selectTag(p.tag) },
      el("td", { textContent: p.tag, title: p.description || "" }),
      el("td", { className: "num", textContent: fmtValue(r.value ?? null, p.unit) }),
      el("td", {}, rangeBar(r.value ?? null, p.lo, p.hi)),
      el("td", { className: r.quality === "good" && !r.stale && !silent ? "" : "bad-quality",
                 textContent: quality }));
    tr.dataset.tag = p.tag;
    if (p.tag === state.trendTag) tr.classList.add("selected");
    return tr;
  });
  $("#zone-points tbody").replaceChildren(...rows);
}
function showOverview() {
  state.zone = null;
  $("#overview-title").textContent = "Overview";
  $("#back").hidden = true;
  $("#zones").hidden = false;
  $("#zone-points").hidden = true;
  renderZones();
}
async function pollLatest() {
  try {
    const body = await call("GET", "/latest");
    for (const r of body.readings) state.latest.set(r.tag, r);
    renderZones();
    appendLive();
  } catch (e) { console.error(e); }
}

// ---- point detail: the last hours from /history, then live values as /latest brings them;
// and the point's alarm history.
async function selectTag(tag) {
  state.trendTag = tag;
  const p = state.byTag.get(tag);
  $("#trend-tag").textContent = `${tag} [${p.unit}]`;
  $("#trend-tag").className = "";
  $("#point-description").textContent = p.description || "";
  if (state.zone !== null) renderZonePoints();
  await Promise.all([loadTrend(p), loadPointAlarms(tag)]);
}
// The raw readings when they fit the chart's width, one per pixel at most; beyond that, the
// means of buckets as wide as a pixel.
async function loadTrend(p) {
  const asked = ++state.trendAsked;
  const range = $("#trend-range").value;
  const pixels = Math.max($("#chart").clientWidth, 300);
  const base = `/history?tag=${encodeURIComponent(p.tag)}&start=-${range}`;
  const raw = await call("GET", `${base}&limit=${pixels}`);
  let data, how;
  if (!raw.truncated) {
    data = [raw.ts, raw.value];
    how = `${raw.rows} reading${raw.rows === 1 ? "" : "s"}`;
  } else {
    const seconds = Math.ceil(RANGE_SECONDS[range] / pixels);
    const body = await call("GET", `${base}&bucket=${seconds}s&agg=mean`);
    data = [body.ts, body.mean];
    how = `means of ${seconds} s`;
  }
  // Another point or range was picked meanwhile: its answer may come in before this one's.
  if (asked !== state.trendAsked) return;
  state.trendData = [data[0].map((t) => Date.parse(t) / 1000), data[1]];
  $("#trend-how").textContent = `(${how}, last ${range})`;
  drawChart(p);
}
// A y-range that a flat or a single reading does not shrink to noise: at least 2 % of the
// point's lo-hi span (else of its value), centred on the data, 10 % padding.
function yRange(point) {
  return (u, min, max) => {
    if (min === null || max === null || !Number.isFinite(min)) {
      return point.lo !== null && point.hi !== null ? [point.lo, point.hi] : [0, 1];
    }
    const span = point.lo !== null && point.hi !== null ? point.hi - point.lo : 0;
    const floor = span > 0 ? 0.02 * span : 0.02 * Math.max(Math.abs(min), Math.abs(max)) || 1;
    const half = Math.max(max - min, floor) * 0.55;
    const mid = (min + max) / 2;
    return [mid - half, mid + half];
  };
}
// The point's own alarms and its device's comms alarms, newest first.
async function loadPointAlarms(tag) {
  try {
    const p = state.byTag.get(tag);
    const query = (which) => call("GET", `/alarms?${which}&shelved=include&suppressed=include`
                                         + "&limit=50");
    const [own, device] = await Promise.all([
      query(`tag=${encodeURIComponent(tag)}`),
      p.device ? query(`device=${encodeURIComponent(p.device)}&kind=comms`)
        : { alarms: [] }]);
    if (tag !== state.trendTag) return;
    const alarms = [...new Map([...own.alarms, ...device.alarms].map((a) => [a.id, a])).values()]
      .sort((a, b) => (b.start || "").localeCompare(a.start || ""));
    const unit = p.unit || "";
    $("#point-alarms tbody").replaceChildren(...alarms.map((a) => el("tr", {},
      el("td", {}, prioBadge(a.priority, a.priority.toUpperCase())),
      el("td", { className: "time",
                 textContent: `${fmtTime(a.start)} → ${fmtTime(a.end) || "active"}` }),
      el("td", { textContent: a.message, title: `value ${fmtValue(a.value, unit)}` }),
      el("td", { textContent: (a.state || "").replaceAll("-", " ")
                              + (a.shelved ? " (shelved)" : "") }))));
    $("#point-alarms").hidden = alarms.length === 0;
    $("#point-no-alarms").hidden = alarms.length > 0;
  } catch (e) { console.error(e); }
}
function drawChart(point) {
  if (state.chart) state.chart.destroy();
  const box = $("#chart");
  // what is drawn, for a test or a curious operator's devtools
  box.dataset.mode = $("#trend-how").textContent.includes("means") ? "buckets" : "raw";
  box.dataset.points = String(state.trendData[0].length);
  state.chart = new uPlot({
    width: Math.max(box.clientWidth, 300), height: 260,
    series: [{}, { label: `${point.tag} (${point.unit})`, stroke: "#303030", width: 1.5,
                   spanGaps: false }],
    axes: [{}, { label: point.unit }],
    scales: { x: { time: true }, y: { range: yRange(point) } },
    hooks: { draw: [(u) => {
      box.dataset.yMin = String(u.scales.y.min);
      box.dataset.yMax = String(u.scales.y.max);
    }] },
  }, state.trendData, box);
}
function appendLive() {
  const r = state.trendTag && state.latest.get(state.trendTag);
  if (!r || !r.source_ts || !state.chart) return;
  const t = Date.parse(r.source_ts) / 1000;
  const [xs, ys] = state.trendData;
  if (xs.length && t <= xs[xs.length - 1]) return;
  xs.push(t); ys.push(r.value);
  state.chart.setData(state.trendData);
}

// ---- start
async function start() {
  $("#login").hidden = true;
  $("#main").hidden = false;
  const [me, points] = await Promise.all([call("GET", "/auth/me"), call("GET", "/points")]);
  state.role = me.role;
  document.body.dataset.role = me.role;
  $("#who").textContent = `${me.name} (${me.role})`;
  state.points = points.points;
  state.byTag = new Map(state.points.map((p) => [p.tag, p]));
  openStream();  // first: no event between the list and the stream is missed (ids dedupe)
  await Promise.all([loadAlarms(), pollLatest(), pollKpis()]);
  renderAlarms();  // an empty list says so
  state.timers.push(setInterval(pollLatest, LIVE_POLL_MS), setInterval(pollKpis, KPI_POLL_MS));
  // Public, health says only ok/degraded/down: the site's name comes with a token.
  const health = await fetch(`${API}/health`, { headers: { Authorization: `Bearer ${state.token}` } })
    .then((r) => r.json()).catch(() => ({}));
  $("#site").textContent = health.site ? `— ${health.site}` : "";
}

$("#login").onsubmit = (ev) => {
  ev.preventDefault();
  state.token = $("#token").value.trim();
  sessionStorage.setItem("scadawatch-token", state.token);
  start().catch((e) => { $("#login-error").textContent = e.message; });
};
$("#back").onclick = showOverview;
$("#shelve-cancel").onclick = () => $("#shelve-dialog").close("cancel");
$("#show-closed").onchange = (ev) => {
  if (ev.target.checked) loadAlarms("closed").catch((e) => notify(e.message));
  renderAlarms();
};
$("#notice").onclick = () => notify("");
$("#ack-visible").onclick = () => acknowledge(visibleAlarms().filter(isUnacked).map((a) => a.id));
$("#trend-range").onchange = () => state.trendTag && selectTag(state.trendTag);
// Keyboard: Enter opens the focused zone or point, Escape goes back to the overview.
document.addEventListener("keydown", (ev) => {
  if (ev.target.closest?.("dialog, input, select")) return;
  if (ev.key === "Escape" && state.zone !== null) showOverview();
  else if (ev.key === "Enter" && ev.target.matches?.(".zone, #zone-points tr")) ev.target.click();
});
setInterval(() => { $("#clock").textContent = new Date().toISOString().slice(0, 19) + "Z"; }, 1000);

state.token = takeTokenFromLink();
if (state.token) start().catch((e) => signOut(e.message));
else signOut();
