// The control-room page: alarm list (live through server-sent events), zone overview and a
// point's detail (trend, alarm history). Plain ES module, no build step; uPlot draws the trend.
const API = "/api/v1";
const PRIORITY_RANK = { critical: 0, high: 1, medium: 2, low: 3 };
const LIVE_POLL_MS = 2000;
const KPI_POLL_MS = 10_000;
const KPI_AFTER_RAISE_MS = 500;  // raises arrive in bursts: one KPI call per burst
const LOST_AFTER_ERRORS = 3;  // failed reconnects before the status says "lost"
const REOPEN_MS = 5000;  // after the browser gives up on the stream (e.g. a 5xx)
const ALARM_EVENTS = ["raise", "clear", "ack", "shelve", "unshelve", "comment", "suppress",
                      "unsuppress"];

const $ = (sel) => document.querySelector(sel);
const state = {
  token: null, role: null, points: [], byTag: new Map(), latest: new Map(),
  alarms: new Map(), rows: new Map(), renderQueued: false, kpiTimer: null,
  zone: null, trendTag: null, chart: null, trendData: [[], []],
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
    if (a.state !== "closed") {
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
    if (state.trendTag && alarm.tag === state.trendTag) loadPointAlarms(state.trendTag);
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
function zoneSummary(zone) {
  const pts = state.points.filter((p) => p.zone === zone);
  const inflow = pts.filter((p) => p.role === "inflow");
  const rows = [];
  if (inflow.length) {
    const vals = inflow.map((p) => state.latest.get(p.tag)?.value);
    const sum = vals.every((v) => typeof v === "number") ? vals.reduce((s, v) => s + v, 0) : null;
    rows.push(["inflow", fmtValue(sum, inflow[0].unit), null]);
  }
  const shown = (p) => ["pressure", "level", "voltage"].includes(p.kind)
    || (p.unit === "%" && /loading/.test(p.tag));
  for (const p of pts.filter(shown)) {
    const r = state.latest.get(p.tag);
    rows.push([p.tag.replace(`${zone}.`, ""), fmtValue(r?.value ?? null, p.unit),
               rangeBar(r?.value ?? null, p.lo, p.hi)]);
  }
  return rows.slice(0, 8);
}
// A zone's worst active alarm, by shape, colour and text (one colour per priority).
function zoneAlarmBadge(zone) {
  const active = [...state.alarms.values()]
    .filter((a) => a.zone === zone && isActive(a) && isShown(a, false)).sort(alarmOrder);
  if (!active.length) return null;
  return prioBadge(active[0].priority, `${active.length} alarm${active.length > 1 ? "s" : ""}`);
}
function renderZones() {
  if (state.zone) return renderZonePoints();
  const zones = [...new Set(state.points.map((p) => p.zone).filter(Boolean))].sort();
  $("#zones").replaceChildren(...zones.map((z) => {
    const badge = zoneAlarmBadge(z);
    const card = el("div", { className: "zone", tabIndex: 0, onclick: () => selectZone(z) },
                    el("h3", { textContent: z }, ...(badge ? [" ", badge] : [])));
    card.dataset.zone = z;
    if (badge) card.classList.add("in-alarm");
    const kv = el("div", { className: "kv" });
    for (const [name, value, bar] of zoneSummary(z)) {
      kv.append(el("span", { textContent: name }), el("span", { textContent: value }),
                bar || el("span"));
    }
    card.append(kv);
    return card;
  }));
}
function selectZone(zone) {
  state.zone = zone;
  $("#overview-title").textContent = `Zone ${zone}`;
  $("#back").hidden = false;
  $("#zones").hidden = true;
  $("#zone-points").hidden = false;
  renderZonePoints();
}
function renderZonePoints() {
  const rows = state.points.filter((p) => p.zone === state.zone).map((p) => {
    const r = state.latest.get(p.tag) || {};
    const tr = el("tr", { tabIndex: 0, onclick: () => selectTag(p.tag) },
      el("td", { textContent: p.tag, title: p.description || "" }),
      el("td", { className: "num", textContent: fmtValue(r.value ?? null, p.unit) }),
      el("td", {}, rangeBar(r.value ?? null, p.lo, p.hi)),
      el("td", { className: r.quality === "good" && !r.stale ? "" : "bad-quality",
                 textContent: r.stale ? "stale" : (r.quality || "—") }));
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
  if (state.zone) renderZonePoints();
  const range = $("#trend-range").value;
  const bucket = range === "1h" ? "10s" : range === "6h" ? "1min" : "5min";
  const [body] = await Promise.all([
    call("GET", `/history?tag=${encodeURIComponent(tag)}&start=-${range}&bucket=${bucket}&agg=mean`),
    loadPointAlarms(tag)]);
  state.trendData = [body.ts.map((t) => Date.parse(t) / 1000), body.mean];
  drawChart(p);
}
async function loadPointAlarms(tag) {
  try {
    const body = await call("GET", `/alarms?tag=${encodeURIComponent(tag)}&shelved=include`
                                   + "&suppressed=include&limit=50");
    if (tag !== state.trendTag) return;
    const unit = state.byTag.get(tag)?.unit || "";
    $("#point-alarms tbody").replaceChildren(...body.alarms.map((a) => el("tr", {},
      el("td", {}, prioBadge(a.priority, a.priority.toUpperCase())),
      el("td", { className: "time", textContent: fmtTime(a.start) }),
      el("td", { className: "time", textContent: fmtTime(a.end) || "active" }),
      el("td", { textContent: a.message }),
      el("td", { className: "num", textContent: fmtValue(a.value, unit) }),
      el("td", { textContent: (a.state || "").replaceAll("-", " ")
                              + (a.shelved ? " (shelved)" : "") }))));
    $("#point-alarms").hidden = false;
    $("#point-no-alarms").hidden = body.alarms.length > 0;
  } catch (e) { console.error(e); }
}
function drawChart(point) {
  if (state.chart) state.chart.destroy();
  const box = $("#chart");
  state.chart = new uPlot({
    width: Math.max(box.clientWidth, 300), height: 260,
    series: [{}, { label: `${point.tag} (${point.unit})`, stroke: "#303030", width: 1.5,
                   spanGaps: false }],
    axes: [{}, { label: point.unit }],
    scales: { x: { time: true } },
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
  if (ev.key === "Escape" && state.zone) showOverview();
  else if (ev.key === "Enter" && ev.target.matches?.(".zone, #zone-points tr")) ev.target.click();
});
setInterval(() => { $("#clock").textContent = new Date().toISOString().slice(0, 19) + "Z"; }, 1000);

state.token = takeTokenFromLink();
if (state.token) start().catch((e) => signOut(e.message));
else signOut();
