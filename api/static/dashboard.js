// The operator dashboard: live readings (SSE /api/v1/live), alerts (SSE /api/v1/alerts/live),
// the city plan (Leaflet, CRS.Simple: no map tiles) and a device chart (uPlot).
"use strict";
const API = "/api/v1";
const DISTRICTS = {
  gate: { centre: [43.845, 77.035], title: "Gate", colour: "#58a6ff" },
  golden: { centre: [43.800, 77.095], title: "Golden", colour: "#d29922" },
  growing: { centre: [43.780, 76.935], title: "Growing", colour: "#a371f7" },
  green: { centre: [43.925, 77.170], title: "Green", colour: "#3fb950" },
};
const FREE_FLOW_KMH = 60;
const STALE_MS = 2 * 60 * 1000;
const CHART_POINTS = 600;
const CHART_METRICS = { air: "pm2_5", traffic: "avg_speed_kmh", energy: "power_kw" };
const METRICS = {};
const devices = new Map();   // device_id -> device from the registry
const latest = new Map();    // device_id -> newest live reading
const markers = new Map();
const alerts = new Map();
const params = new URLSearchParams(location.search);
let selected = params.get("device");
let chart = null;
let series = [[], []];
let map = null;

const $ = (id) => document.getElementById(id);
// The API key: from the link `make run` prints (#key=...), else the one this browser kept.
// It is taken out of the address bar at once so it is not left in history or screenshots.
function apiKey() {
  const fromLink = new URLSearchParams(location.hash.slice(1)).get("key");
  if (fromLink) {
    localStorage.setItem("apiKey", fromLink);
    history.replaceState(null, "", location.pathname + location.search);
  }
  return localStorage.getItem("apiKey") || "";
}
let key = apiKey();
async function getJson(path, options) {
  const response = await fetch(API + path, { headers: { Accept: "application/json",
    "Content-Type": "application/json", Authorization: "Bearer " + key }, ...options });
  if (response.status === 401) $("whoami").textContent = "enter an API key";
  if (!response.ok) throw new Error(path + ": HTTP " + response.status);
  return response.json();
}
// EventSource cannot send headers; the live feeds take the key as a query parameter.
const feedUrl = (path) => API + path + "?access_token=" + encodeURIComponent(key);

// --- plan: lat/lon projected to km around the city centre (no tiles, works offline) -------
function project(lat, lon) {
  return L.latLng((lat - 43.85) * 111, (lon - 77.05) * 111 * Math.cos(43.85 * Math.PI / 180));
}
function hash(text) {
  let h = 2166136261;
  for (const c of text) h = Math.imul(h ^ c.charCodeAt(0), 16777619);
  return (h >>> 0) / 4294967296;
}
function position(device) {
  if (device.location) return project(device.location.lat, device.location.lon);
  const [lat, lon] = DISTRICTS[device.district].centre;
  const angle = hash(device.device_id) * 2 * Math.PI, r = 0.02 * hash(device.device_id + "r");
  return project(lat + r * Math.sin(angle), lon + r * 1.4 * Math.cos(angle));
}
function initPlan() {
  map = L.map("plan", { crs: L.CRS.Simple, minZoom: -2, maxZoom: 6, zoomSnap: 0.25,
    attributionControl: false });
  const bounds = [];
  for (const [name, d] of Object.entries(DISTRICTS)) {
    const c = project(...d.centre), corners = [];
    for (let i = 0; i < 6; i++) {
      const a = Math.PI / 3 * i + Math.PI / 6;
      corners.push([c.lat + 3.1 * Math.sin(a), c.lng + 3.1 * Math.cos(a)]);
    }
    L.polygon(corners, { color: d.colour, weight: 2, fillOpacity: 0.08 }).addTo(map)
      .bindTooltip(d.title, { permanent: true, direction: "center", className: "district-label" });
    bounds.push(...corners);
  }
  map.fitBounds(bounds, { padding: [10, 10] });
}
function statusOf(device) {
  const reading = latest.get(device.device_id);
  const seen = Math.max(reading ? Date.parse(reading.received_at) : 0,
    device.last_seen ? Date.parse(device.last_seen) : 0);
  if (device.status === "offline") return "offline";
  if (!seen) return "unknown";
  return Date.now() - seen > STALE_MS ? "stale" : "online";
}
const STATUS_COLOURS = { online: "#3fb950", offline: "#f85149", stale: "#d29922", unknown: "#8b9bab" };
function drawMarker(device) {
  let marker = markers.get(device.device_id);
  const colour = STATUS_COLOURS[statusOf(device)];
  if (!marker) {
    marker = L.circleMarker(position(device), { radius: 4, weight: 1, fillOpacity: 0.9 })
      .addTo(map).on("click", () => select(device.device_id));
    markers.set(device.device_id, marker);
  }
  marker.setStyle({ color: colour, fillColor: colour });
  const reading = latest.get(device.device_id);
  const value = reading ? reading.values[CHART_METRICS[device.kind]] : null;
  const text = `${device.device_id}<br>${device.kind}: ${format(value)}`;
  if (marker.getTooltip()) marker.setTooltipContent(text); else marker.bindTooltip(text);
}

// --- district tiles: simple live KPIs from the newest readings ---------------------------
const AQI_BREAKPOINTS = [ // US EPA PM2.5 (µg/m³, 24 h) -> AQI
  [0, 9, 0, 50], [9.1, 35.4, 51, 100], [35.5, 55.4, 101, 150], [55.5, 125.4, 151, 200],
  [125.5, 225.4, 201, 300], [225.5, 325.4, 301, 500]];
function aqi(pm25) {
  for (const [cl, ch, il, ih] of AQI_BREAKPOINTS) {
    if (pm25 <= ch) return Math.round((ih - il) / (ch - cl) * (Math.max(pm25, cl) - cl) + il);
  }
  return 500;
}
function initTiles() {
  for (const [name, d] of Object.entries(DISTRICTS)) {
    const tile = document.createElement("div");
    tile.className = "tile";
    tile.dataset.district = name;
    tile.style.borderTop = `3px solid ${d.colour}`;
    tile.innerHTML = `<h3>${d.title}</h3><div class="kpis">
      <div class="kpi"><b data-kpi="aqi">–</b><span>air quality index</span></div>
      <div class="kpi"><b data-kpi="congestion">–</b><span>congestion</span></div>
      <div class="kpi"><b data-kpi="load">–</b><span>energy load</span></div></div>`;
    $("tiles").appendChild(tile);
  }
}
function renderTiles() {
  const acc = {};
  for (const name of Object.keys(DISTRICTS)) acc[name] = { pm: [], speed: [], power: 0, meters: 0 };
  for (const reading of latest.values()) {
    const a = acc[reading.district];
    if (!a) continue;
    const v = reading.values;
    if (reading.kind === "air" && v.pm2_5 != null) a.pm.push(v.pm2_5);
    if (reading.kind === "traffic" && v.avg_speed_kmh != null) a.speed.push(v.avg_speed_kmh);
    if (reading.kind === "energy" && v.power_kw != null) { a.power += v.power_kw; a.meters++; }
  }
  const mean = (xs) => xs.reduce((s, x) => s + x, 0) / xs.length;
  for (const [name, a] of Object.entries(acc)) {
    const tile = document.querySelector(`.tile[data-district="${name}"]`);
    tile.querySelector('[data-kpi="aqi"]').textContent = a.pm.length ? aqi(mean(a.pm)) : "–";
    tile.querySelector('[data-kpi="congestion"]').textContent = a.speed.length
      ? Math.round(100 * Math.max(0, 1 - mean(a.speed) / FREE_FLOW_KMH)) + "%" : "–";
    tile.querySelector('[data-kpi="load"]').textContent = a.meters
      ? (a.power >= 1000 ? (a.power / 1000).toFixed(2) + " MW" : Math.round(a.power) + " kW") : "–";
  }
}

// --- chart of the chosen device -----------------------------------------------------------
function format(value) {
  if (value === null || value === undefined) return "–";
  return Number.isInteger(value) ? String(value) : value.toFixed(1);
}
function metric() { return $("metric-select").value; }
function makeChart() {
  if (chart) chart.destroy();
  const box = $("chart");
  chart = new uPlot({ width: box.clientWidth || 500, height: 260, series: [{},
    { label: metric(), stroke: "#58a6ff", width: 2, points: { show: false } }],
    axes: [{ stroke: "#8b9bab", grid: { stroke: "#263442" } },
      { stroke: "#8b9bab", grid: { stroke: "#263442" } }] }, series, box);
}
async function select(deviceId, keepMetric = false) {
  selected = deviceId;
  const device = devices.get(deviceId);
  if (!device) return;
  $("device-select").value = deviceId;
  if (!keepMetric) {
    const names = METRICS[device.kind] || [CHART_METRICS[device.kind]];
    $("metric-select").innerHTML = names.map((n) => `<option>${n}</option>`).join("");
    $("metric-select").value = CHART_METRICS[device.kind];
  }
  series = [[], []];
  try {
    const from = new Date(Date.now() - 15 * 60 * 1000).toISOString();
    const page = await getJson(`/devices/${encodeURIComponent(deviceId)}/readings?from=${encodeURIComponent(from)}&limit=${CHART_POINTS}`);
    for (const r of page.items) addPoint(r.ts, r.values, false);
  } catch (error) { console.warn(error); }
  const reading = latest.get(deviceId);
  if (reading) addPoint(reading.ts, reading.values, false);
  makeChart();
}
function addPoint(ts, values, redraw = true) {
  const t = Date.parse(ts) / 1000, v = values[metric()];
  if (v === undefined) return;
  const xs = series[0];
  if (xs.length && t <= xs[xs.length - 1]) return;
  xs.push(t); series[1].push(v);
  if (xs.length > CHART_POINTS) { xs.shift(); series[1].shift(); }
  $("chart-value").textContent = format(v);
  if (redraw && chart) chart.setData(series);
}

// --- devices table ------------------------------------------------------------------------
function renderDevices() {
  const rows = [...devices.values()].sort((a, b) => a.device_id.localeCompare(b.device_id));
  $("device-count").textContent = `${rows.length} registered`;
  $("devices").innerHTML = rows.map((d) => {
    const status = statusOf(d), reading = latest.get(d.device_id);
    const seen = reading ? reading.received_at : d.last_seen;
    return `<tr data-device="${d.device_id}"><td>${d.device_id}</td><td>${d.kind}</td><td>${d.district}</td>
      <td class="status-${status}">${status}</td><td>${seen ? new Date(seen).toLocaleTimeString() : "never"}</td></tr>`;
  }).join("");
  for (const d of rows) drawMarker(d);
}
async function loadDevices() {
  const page = await getJson("/devices?limit=5000&enabled=true");
  const known = new Set();
  for (const d of page.items) { devices.set(d.device_id, d); known.add(d.device_id); }
  for (const id of [...devices.keys()]) if (!known.has(id)) devices.delete(id);
  const select = $("device-select");
  select.innerHTML = [...devices.keys()].sort().map((id) => `<option>${id}</option>`).join("");
  if (!selected || !devices.has(selected)) selected = select.options[0] ? select.options[0].value : null;
  select.value = selected || "";
  renderDevices();
}

// --- alerts -------------------------------------------------------------------------------
function renderAlerts() {
  const active = [...alerts.values()].filter((a) => a.state !== "resolved")
    .sort((a, b) => Date.parse(b.opened_at) - Date.parse(a.opened_at));
  $("alert-count").textContent = `${active.length} unresolved`;
  $("alerts").innerHTML = active.map((a) => `<tr class="${a.state}" data-alert-id="${a.alert_id}">
    <td>${new Date(a.opened_at).toLocaleTimeString()}</td><td class="sev-${a.severity}">${a.severity}</td>
    <td>${a.device_id}</td><td title="${a.message}">${a.rule_name}</td><td data-field="state">${a.state}${a.acknowledged_by ? " by " + a.acknowledged_by : ""}</td>
    <td>${a.state === "open" ? `<button data-ack="${a.alert_id}">Acknowledge</button>` : ""}</td></tr>`).join("");
}
$("alerts").addEventListener("click", async (event) => {
  const id = event.target.dataset && event.target.dataset.ack;
  if (!id) return;
  event.target.disabled = true;
  try {
    const alert = await getJson(`/alerts/${id}/acknowledge`, { method: "POST" });
    alerts.set(alert.alert_id, alert);
  } catch (error) { console.warn(error); }
  renderAlerts();
});
function connectAlerts() {
  const source = new EventSource(feedUrl("/alerts/live"));
  source.addEventListener("snapshot", (e) => {
    alerts.clear();
    for (const a of JSON.parse(e.data).items) alerts.set(a.alert_id, a);
    renderAlerts();
  });
  source.addEventListener("alert", (e) => {
    const a = JSON.parse(e.data);
    alerts.set(a.alert_id, a);
    renderAlerts();
    loadDevices().catch(console.warn);  // an alert often means a status change
  });
}

// --- live readings ------------------------------------------------------------------------
function onReading(reading) {
  latest.set(reading.device_id, reading);
  if (reading.device_id === selected) addPoint(reading.ts, reading.values);
}
let dirty = false;
function connectLive() {
  const source = new EventSource(feedUrl("/live"));
  const state = $("connection");
  source.onopen = () => { state.dataset.state = "live"; state.textContent = "live"; };
  source.onerror = () => { state.dataset.state = "down"; state.textContent = "reconnecting…"; };
  source.addEventListener("snapshot", (e) => { for (const r of JSON.parse(e.data).items) onReading(r); dirty = true; });
  source.addEventListener("reading", (e) => { onReading(JSON.parse(e.data)); dirty = true; });
}

async function main() {
  initTiles();
  initPlan();
  $("api-key").value = key;
  $("api-key").addEventListener("change", () => {
    localStorage.setItem("apiKey", $("api-key").value.trim());
    location.reload();
  });
  try {
    const me = await getJson("/keys/me");
    $("whoami").textContent = `${me.name} (${me.role})`;
  } catch (error) { console.warn(error); }
  try { Object.assign(METRICS, Object.fromEntries(Object.entries(await getJson("/contract"))
    .map(([kind, metrics]) => [kind, Object.keys(metrics)]))); } catch (error) { console.warn(error); }
  await loadDevices();
  $("device-select").addEventListener("change", (e) => select(e.target.value));
  $("metric-select").addEventListener("change", () => select(selected, true));
  connectLive();
  connectAlerts();
  if (selected) await select(selected);
  setInterval(() => { if (dirty) { dirty = false; renderTiles(); renderDevices(); } }, 1000);
  setInterval(() => loadDevices().catch(console.warn), 15000);
  setInterval(() => { $("clock").textContent = new Date().toLocaleTimeString(); }, 1000);
}
main().catch((error) => { $("connection").textContent = String(error); });
