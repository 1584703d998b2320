// What every view shares: who the key is, the metric contract, the registry, and the two live
// feeds (readings and alerts), each opened once for the whole page.
import { api, feedUrl } from "./api.js";

const ROLES = ["reader", "operator", "admin"];
export const session = { me: null, contract: {}, metrics: {} };
export const devices = new Map();
export const latest = new Map();
export const alerts = new Map();
const readingListeners = new Set();
const alertListeners = new Set();
const stateListeners = new Set();
const sources = [];
export const feedState = { readings: "connecting", alerts: "connecting" };

/** Whether the key's role is at least ``role`` (reader < operator < admin). */
export function can(role) {
  return session.me !== null && ROLES.indexOf(session.me.role) >= ROLES.indexOf(role);
}

export async function loadSession() {
  session.me = await api.get("/keys/me");
  session.contract = await api.get("/contract");
  session.metrics = {};
  for (const [kind, metrics] of Object.entries(session.contract)) {
    for (const [name, spec] of Object.entries(metrics)) session.metrics[name] = { kind, ...spec };
  }
}

/** The unit of a metric, from GET /contract (the one place units are defined). */
export function unitOf(metric) {
  return session.metrics[metric]?.unit ?? "";
}

/** Every registered device, read page by page. */
export async function loadDevices() {
  const seen = new Set();
  for (let offset = 0; ; offset += 1000) {
    const page = await api.get("/devices", { limit: 1000, offset });
    for (const device of page.items) {
      devices.set(device.device_id, device);
      seen.add(device.device_id);
    }
    if (offset + page.items.length >= page.total || page.items.length === 0) break;
  }
  for (const id of [...devices.keys()]) if (!seen.has(id)) devices.delete(id);
  return devices;
}

function setState(feed, state) {
  feedState[feed] = state;
  for (const listener of stateListeners) listener(feedState);
}

function listen(set, listener) {
  set.add(listener);
  return () => set.delete(listener);
}
export const onReading = (listener) => listen(readingListeners, listener);
export const onAlerts = (listener) => listen(alertListeners, listener);
export const onFeedState = (listener) => listen(stateListeners, listener);

function reading(item) {
  latest.set(item.device_id, item);
  for (const listener of readingListeners) listener(item);
}

/** Open the live feeds; EventSource reconnects by itself (the API sends retry:). */
export function connectFeeds() {
  const live = new EventSource(feedUrl("/live"));
  live.onopen = () => setState("readings", "live");
  live.onerror = () => setState("readings", "down");
  live.addEventListener("snapshot", (event) => {
    for (const item of JSON.parse(event.data).items) reading(item);
  });
  live.addEventListener("reading", (event) => reading(JSON.parse(event.data)));

  const feed = new EventSource(feedUrl("/alerts/live"));
  feed.onopen = () => setState("alerts", "live");
  feed.onerror = () => setState("alerts", "down");
  feed.addEventListener("snapshot", (event) => {
    alerts.clear();
    for (const alert of JSON.parse(event.data).items) alerts.set(alert.alert_id, alert);
    for (const listener of alertListeners) listener(null);
  });
  feed.addEventListener("alert", (event) => {
    const alert = JSON.parse(event.data);
    alerts.set(alert.alert_id, alert);
    for (const listener of alertListeners) listener(alert);
  });
  sources.push(live, feed);
}

/** Keep an alert the API returned (an acknowledgement) until the feed confirms it. */
export function storeAlert(alert) {
  alerts.set(alert.alert_id, alert);
  for (const listener of alertListeners) listener(alert);
}

// A device is "silent" when the broker says online but nothing arrived for this long.
const SILENT_MS = 2 * 60 * 1000;

/** The status a device is drawn with: disabled, offline, silent, online or unknown. */
export function statusOf(device) {
  if (!device.enabled) return "disabled";
  if (device.status === "offline") return "offline";
  const reading = latest.get(device.device_id);
  const seen = Math.max(reading ? Date.parse(reading.received_at) : 0,
    device.last_seen ? Date.parse(device.last_seen) : 0);
  if (!seen) return device.status === "online" ? "online" : "unknown";
  return Date.now() - seen > SILENT_MS ? "silent" : "online";
}
export const STATUSES = ["online", "silent", "offline", "unknown", "disabled"];
