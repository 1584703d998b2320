// History of a device, a district or the city: a range picker (15 min .. 1 y, or a custom span),
// a bucket chosen to fit the range, aggregates with fill=true so empty buckets are gaps, and
// the newest buckets re-read every few seconds on short ranges.
import { api, detailText } from "./api.js";
import { h, notify, raw, replace } from "./dom.js";
import { t } from "./i18n.js";
import { fromAlmatyInput, number, toAlmatyInput, unit, zoneLabel } from "./format.js";
import { createChart } from "./chart.js";
import { onReading } from "./store.js";

export const RANGES = [
  ["15m", 900], ["1h", 3600], ["6h", 21600], ["24h", 86400], ["7d", 604800], ["30d", 2592000],
  ["1y", 31536000],
];
// Bucket widths the rollup tiers answer (multiples of a minute, an hour or an Almaty day).
const BUCKETS = [[60, "1m"], [300, "5m"], [900, "15m"], [1800, "30m"], [3600, "1h"],
  [10800, "3h"], [21600, "6h"], [86400, "1d"], [604800, "7d"]];
const MAX_POINTS = 500;
const LIVE_UP_TO_S = 3600;
const LIVE_REFRESH_MS = 5000;

/** The narrowest bucket that gives at most 500 points and is no finer than a device reports. */
export function bucketFor(spanS, finestS = 60) {
  for (const [seconds, name] of BUCKETS) {
    if (seconds >= finestS && spanS / seconds <= MAX_POINTS) return { seconds, name };
  }
  return { seconds: 604800, name: "7d" };
}

const COUNTS = new Set(["vehicle_count", "heavy_vehicle_count"]);
export function defaultFn(metric) {
  if (metric === "energy_kwh") return "increase";
  if (COUNTS.has(metric)) return "rate";
  return "avg";
}
function fnsFor(metric) {
  const fns = ["avg", "min", "max"];
  if (metric === "energy_kwh") fns.unshift("increase");
  if (COUNTS.has(metric)) fns.unshift("rate", "sum");
  return [...fns, "count"];
}

function pathOf(scope) {
  if (scope.type === "device") return `/devices/${encodeURIComponent(scope.id)}/aggregates`;
  if (scope.type === "district") return `/districts/${scope.id}/aggregates`;
  return "/city/aggregates";
}

/** A history panel in ``el`` for ``scope`` ({type, id, finestS}) over ``metrics``. */
export function createHistory(el, scope, metrics, { metric = metrics[0], title = null } = {}) {
  const state = { metric, fn: defaultFn(metric), range: "1h", from: null, to: null, loading: 0 };
  const chartBox = h("div", { class: "chart" });
  const caption = h("p", { class: "chart-caption" });
  const error = h("p", { class: "inline-error", role: "alert", hidden: true });
  const metricSelect = h("select", { "aria-label": t("history.metric") },
    metrics.map((name) => h("option", { value: name }, t(`metric.${name}`))));
  const fnSelect = h("select", { "aria-label": t("history.fn") });
  const customFrom = h("input", { type: "datetime-local", "aria-label": t("history.custom_from") });
  const customTo = h("input", { type: "datetime-local", "aria-label": t("history.custom_to") });
  const custom = h("form", { class: "custom-range", hidden: true },
    h("label", {}, t("history.from"), customFrom), h("label", {}, t("history.to"), customTo),
    h("span", { class: "muted" }, zoneLabel()),
    h("button", { type: "submit" }, t("history.apply")));
  const rangeButtons = [...RANGES.map(([key]) => key), "custom"].map((key) =>
    h("button", { type: "button", class: "range", dataset: { range: key },
      "aria-pressed": String(key === state.range) }, t(`range.${key}`)));
  const picker = h("div", { class: "range-picker", role: "group", "aria-label": t("history.range") },
    rangeButtons);
  replace(el, h("div", { class: "history-head" },
    title ? h("h3", {}, title) : null, metricSelect, fnSelect, picker), custom, error, chartBox, caption);
  const chart = createChart(chartBox);
  metricSelect.value = metric;

  function fillFns() {
    replace(fnSelect, fnsFor(state.metric).map((fn) => h("option", { value: fn }, t(`fn.${fn}`))));
    fnSelect.value = state.fn;
  }
  fillFns();

  function window() {
    if (state.range === "custom") return [state.from, state.to];
    const span = Object.fromEntries(RANGES)[state.range] * 1000;
    const to = Date.now();
    return [to - span, to];
  }

  async function load() {
    const [from, to] = window();
    const bucket = bucketFor((to - from) / 1000, scope.finestS || 60);
    const ticket = ++state.loading;
    try {
      const series = await api.get(pathOf(scope), { metric: state.metric, fn: state.fn,
        bucket: bucket.name, from: new Date(from).toISOString(), to: new Date(to).toISOString(),
        fill: true });
      if (ticket !== state.loading) return; // a newer request answers instead
      error.hidden = true;
      const xs = series.items.map((item) => Date.parse(item.bucket_start) / 1000);
      const ys = series.items.map((item) => item.value);
      chart.update({ xs, ys, from: from / 1000, to: to / 1000, unitName: series.unit,
        label: t(`metric.${state.metric}`) });
      const gaps = series.items.filter((item) => item.gap).length;
      el.dataset.bucket = bucket.name;
      el.dataset.gaps = String(gaps);
      replace(caption, t("history.caption", { metric: t(`metric.${state.metric}`),
        fn: t(`fn.${state.fn}`), bucket: t(`bucket.${bucket.name}`), unit: unit(series.unit),
        points: number(series.items.length), gaps: number(gaps), devices: number(series.devices) }),
      " ", raw(series.tier, "code", { title: t("history.tier") }));
    } catch (err) {
      if (ticket !== state.loading) return;
      replace(error, h("span", {}, t("history.failed")), " ", raw(detailText(err.detail)));
      error.hidden = false;
    }
  }

  function choose(range) {
    state.range = range;
    for (const button of rangeButtons) {
      button.setAttribute("aria-pressed", String(button.dataset.range === range));
    }
    custom.hidden = range !== "custom";
    if (range === "custom") {
      const [from, to] = state.from ? [state.from, state.to] : [Date.now() - 86400000, Date.now()];
      customFrom.value = toAlmatyInput(from);
      customTo.value = toAlmatyInput(to);
      customFrom.focus();
      return;
    }
    load();
  }

  picker.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-range]");
    if (button) choose(button.dataset.range);
  });
  custom.addEventListener("submit", (event) => {
    event.preventDefault();
    const from = fromAlmatyInput(customFrom.value), to = fromAlmatyInput(customTo.value);
    if (from === null || to === null || from >= to) {
      notify(t("history.bad_range"));
      return;
    }
    Object.assign(state, { from, to });
    load();
  });
  metricSelect.addEventListener("change", () => {
    state.metric = metricSelect.value;
    state.fn = defaultFn(state.metric);
    fillFns();
    load();
  });
  fnSelect.addEventListener("change", () => {
    state.fn = fnSelect.value;
    load();
  });

  // Short ranges follow the clock: the newest buckets are re-read from the API (never summed
  // up here), on a timer and, for a device, soon after its live reading arrives.
  let pending = null;
  const live = () => state.range !== "custom" && Object.fromEntries(RANGES)[state.range] <= LIVE_UP_TO_S;
  const timer = setInterval(() => { if (live()) load(); }, LIVE_REFRESH_MS);
  const stop = onReading((reading) => {
    // Districts and the city hear a reading every moment: the timer is enough for them.
    if (!live() || pending || scope.type !== "device" || reading.device_id !== scope.id) return;
    pending = setTimeout(() => { pending = null; load(); }, 1500);
  });

  load();
  return {
    choose,
    destroy() {
      clearInterval(timer);
      clearTimeout(pending);
      stop();
      chart.destroy();
    },
  };
}
