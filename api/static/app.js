// The control-room page: alarm list (live through server-sent events), zone overview and a
// trend of the selected point. Plain ES module, no build step; uPlot draws the trend.
const API = "/api/v1";
const PRIORITY_RANK = { critical: 0, high: 1, medium: 2, low: 3 };
const LIVE_POLL_MS = 2000;

const $ = (sel) => document.querySelector(sel);
const state = {
  token: null, points: [], byTag: new Map(), latest: new Map(), alarms: new Map(),
  zone: null, trendTag: null, chart: null, trendData: [[], []], stream: null,
};

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
    throw new Error(`${method} ${path}: ${res.status} ${detail}`);
  }
  return res.json();
}

function signOut(message) {
  sessionStorage.removeItem("scadawatch-token");
  if (state.stream) state.stream.close();
  $("#main").hidden = true;
  $("#login").hidden = false;
  $("#login-error").textContent = message || "";
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

// ---- alarms
const isUnacked = (a) => /unack/.test(a.state || "");
const isActive = (a) => a.end === null || a.end === undefined;
function alarmOrder(a, b) {
  return (PRIORITY_RANK[a.priority] - PRIORITY_RANK[b.priority])
    || (b.start || "").localeCompare(a.start || "");
}
function visibleAlarms() {
  const showClosed = $("#show-closed").checked;
  return [...state.alarms.values()]
    .filter((a) => showClosed || a.state !== "closed")
    .filter((a) => !a.shelved)
    .sort(alarmOrder);
}
function renderAlarms() {
  const rows = visibleAlarms().map((a) => {
    const where = a.tag || a.zone || (a.tags || []).join(", ");
    const ack = el("button", { type: "button", textContent: "Ack", hidden: !isUnacked(a),
                               onclick: () => acknowledge([a.id]) });
    ack.dataset.action = "ack";
    const shelve = el("button", { type: "button", textContent: "Shelve",
                                  onclick: () => askShelve(a) });
    shelve.dataset.action = "shelve";
    const tr = el("tr", {},
      el("td", { className: `prio prio-${a.priority}`, textContent: a.priority.toUpperCase() }),
      el("td", { textContent: fmtTime(a.start) }),
      el("td", { textContent: where }),
      el("td", { textContent: a.message }),
      el("td", { className: "num",
                 textContent: fmtValue(a.value, state.byTag.get(a.tag)?.unit || "") }),
      el("td", { textContent: a.kind }),
      el("td", { className: "state", textContent: (a.state || "").replaceAll("-", " ") }),
      el("td", {}, ack, " ", shelve));
    tr.dataset.alarmId = a.id;
    if (isUnacked(a)) tr.classList.add("unacked");
    if (!isActive(a)) tr.classList.add("cleared");
    if (a.tag && state.byTag.has(a.tag)) tr.ondblclick = () => selectTag(a.tag);
    return tr;
  });
  $("#alarm-table tbody").replaceChildren(...rows);
  $("#no-alarms").hidden = rows.length > 0;
  const unacked = [...state.alarms.values()].filter(isUnacked).length;
  $("#alarm-count").textContent = `(${rows.length} shown, ${unacked} unacknowledged)`;
  renderZones();
}
async function acknowledge(ids) {
  if (!ids.length) return;
  try {
    const result = ids.length === 1
      ? await call("POST", `/alarms/${encodeURIComponent(ids[0])}/ack`, {})
      : await call("POST", "/alarms/ack", { ids });
    for (const a of result.acked || [result]) if (a && a.id) state.alarms.set(a.id, a);
    renderAlarms();
  } catch (e) { console.error(e); }
}
function askShelve(alarm) {
  const dialog = $("#shelve-dialog");
  $("#shelve-what").textContent = alarm.tag || alarm.zone || alarm.id;
  $("#shelve-form").reset();
  dialog.onclose = async () => {
    if (dialog.returnValue !== "shelve") return;
    const form = new FormData($("#shelve-form"));
    try {
      const a = await call("POST", `/alarms/${encodeURIComponent(alarm.id)}/shelve`,
                           { duration: form.get("duration"), reason: form.get("reason") });
      state.alarms.set(a.id, a);
      renderAlarms();
    } catch (e) { console.error(e); }
  };
  dialog.showModal();
}
async function loadAlarms() {
  const body = await call("GET", "/alarms?limit=1000");
  state.alarms.clear();
  for (const a of body.alarms || body) state.alarms.set(a.id, a);
  renderAlarms();
}
function openStream() {
  if (state.stream) state.stream.close();
  const url = `${API}/alarms/stream?access_token=${encodeURIComponent(state.token)}`;
  const stream = (state.stream = new EventSource(url));
  const connection = $("#connection");
  stream.onopen = () => { connection.dataset.state = "live"; connection.textContent = "live"; };
  stream.onerror = () => {
    // EventSource reconnects by itself and resumes with Last-Event-ID.
    connection.dataset.state = "lost";
    connection.textContent = "connection lost: reconnecting";
  };
  const onAlarm = (ev) => {
    const alarm = JSON.parse(ev.data);
    if (!alarm || !alarm.id || !alarm.kind) return;  // e.g. a zone put out of service
    state.alarms.set(alarm.id, alarm);
    renderAlarms();
  };
  stream.onmessage = onAlarm;
  for (const name of ["raise", "clear", "ack", "shelve", "unshelve", "comment", "suppress",
                      "unsuppress"]) stream.addEventListener(name, onAlarm);
}
function renderFlood(kpis) {
  const flood = kpis.flood || {};
  $("#flood").hidden = !flood.active;
  $("#flood-rate").textContent = `${kpis.rate?.current ?? "?"} alarms in the last `
    + `${Math.round((kpis.window_seconds || 600) / 60)} minutes`;
}
async function pollKpis() {
  try { renderFlood(await call("GET", "/alarms/kpis")); } catch (e) { console.error(e); }
}

// ---- overview: zones, then a zone's points, then a point's trend (three clicks)
function zoneSummary(zone) {
  const pts = state.points.filter((p) => p.zone === zone);
  const pick = (pred) => pts.filter(pred);
  const inflow = pick((p) => p.role === "inflow");
  const rows = [];
  if (inflow.length) {
    const vals = inflow.map((p) => state.latest.get(p.tag)?.value);
    const sum = vals.every((v) => typeof v === "number") ? vals.reduce((s, v) => s + v, 0) : null;
    rows.push(["inflow", fmtValue(sum, inflow[0].unit), null]);
  }
  for (const p of pick((p) => ["pressure", "level", "voltage"].includes(p.kind)
                          || (p.unit === "%" && /loading/.test(p.tag)))) {
    const r = state.latest.get(p.tag);
    rows.push([p.tag.replace(`${zone}.`, ""), fmtValue(r?.value ?? null, p.unit),
               rangeBar(r?.value ?? null, p.lo, p.hi)]);
  }
  return rows.slice(0, 8);
}
function renderZones() {
  if (state.zone) return renderZonePoints();
  const inAlarm = new Set([...state.alarms.values()].filter(isActive).map((a) => a.zone));
  const zones = [...new Set(state.points.map((p) => p.zone).filter(Boolean))].sort();
  $("#zones").replaceChildren(...zones.map((z) => {
    const card = el("div", { className: "zone", onclick: () => selectZone(z) },
                    el("h3", { textContent: z }));
    card.dataset.zone = z;
    if (inAlarm.has(z)) card.classList.add("in-alarm");
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
    const tr = el("tr", { onclick: () => selectTag(p.tag) },
      el("td", { textContent: p.tag }),
      el("td", { className: "num", textContent: fmtValue(r.value ?? null, p.unit) }),
      el("td", {}, rangeBar(r.value ?? null, p.lo, p.hi)),
      el("td", { className: r.quality === "good" ? "" : "bad-quality",
                 textContent: r.stale ? "stale" : (r.quality || "—") }));
    tr.dataset.tag = p.tag;
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

// ---- trend: the last hours from /history, then live values as /latest brings them
async function selectTag(tag) {
  state.trendTag = tag;
  const p = state.byTag.get(tag);
  $("#trend-tag").textContent = `${tag} [${p.unit}]`;
  $("#trend-tag").className = "";
  const range = $("#trend-range").value;
  const bucket = range === "1h" ? "10s" : range === "6h" ? "1min" : "5min";
  const body = await call("GET", `/history?tag=${encodeURIComponent(tag)}&start=-${range}`
                                 + `&bucket=${bucket}&agg=mean`);
  const xs = body.ts.map((t) => Date.parse(t) / 1000);
  state.trendData = [xs, body.mean];
  drawChart(p);
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
  const points = await call("GET", "/points");
  state.points = points.points;
  state.byTag = new Map(state.points.map((p) => [p.tag, p]));
  await Promise.all([loadAlarms(), pollLatest(), pollKpis()]);
  openStream();
  setInterval(pollLatest, LIVE_POLL_MS);
  setInterval(pollKpis, 10_000);
  const health = await fetch(`${API}/health`).then((r) => r.json()).catch(() => ({}));
  $("#site").textContent = health.site ? `— ${health.site}` : "";
}

$("#login").onsubmit = (ev) => {
  ev.preventDefault();
  state.token = $("#token").value.trim();
  sessionStorage.setItem("scadawatch-token", state.token);
  start().catch((e) => { $("#login-error").textContent = e.message; });
};
$("#back").onclick = showOverview;
$("#show-closed").onchange = renderAlarms;
$("#ack-visible").onclick = () => acknowledge(visibleAlarms().filter(isUnacked).map((a) => a.id));
$("#trend-range").onchange = () => state.trendTag && selectTag(state.trendTag);
setInterval(() => { $("#clock").textContent = new Date().toISOString().slice(0, 19) + "Z"; }, 1000);

state.token = takeTokenFromLink();
if (state.token) start().catch((e) => signOut(e.message));
else signOut();
