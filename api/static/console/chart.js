// A time-series chart (uPlot): Almaty time on the x axis, the unit and the locale's separators
// on the value axis (sized to its widest label, so nothing is clipped), nulls drawn as gaps, and
// the x range clamped to the range asked for (a quiet device never stretches it to years).
import { h, raw, replace } from "./dom.js";
import { t } from "./i18n.js";
import { number, unit, when, zoneLabel } from "./format.js";

const AXIS = { stroke: "#c9d1d9", grid: { stroke: "#30363d", width: 1 }, ticks: { stroke: "#30363d" } };
const FONT = "13px system-ui, sans-serif";

function timeStyle(spanS) {
  if (spanS <= 36 * 3600) return "time";
  if (spanS <= 8 * 86400) return "datetime";
  if (spanS <= 120 * 86400) return "daymonth";
  return "month";
}

// uPlot's recipe for an axis as wide as its labels: measured on its own canvas context.
function valueAxisSize(self, values, axisIdx, cycleNum) {
  const axis = self.axes[axisIdx];
  if (cycleNum > 1) return axis._size;
  let size = axis.ticks.size + axis.gap + (axis.labelSize || 0);
  const longest = (values || []).reduce((acc, v) => (v.length > acc.length ? v : acc), "");
  if (longest) {
    self.ctx.font = axis.font[0];
    size += self.ctx.measureText(longest).width / devicePixelRatio;
  }
  return Math.ceil(size) + 4;
}

function valueRange(self, min, max) {
  if (min === null || max === null || !Number.isFinite(min)) return [0, 1];
  if (min === max) return [min - Math.max(1, Math.abs(min) * 0.01), max + Math.max(1, Math.abs(max) * 0.01)];
  const pad = (max - min) * 0.08;
  return [min - pad, max + pad];
}

/** A chart in ``el``; ``update({xs, ys, from, to, unitName, label})`` redraws it (seconds). */
export function createChart(el, { height = 280, colour = "#58a6ff" } = {}) {
  const box = h("div", { class: "chart-canvas" });
  const readout = h("div", { class: "chart-readout", "aria-live": "off" });
  replace(el, box, readout);
  const state = { from: 0, to: 1, unitName: "", label: "", data: [[], []], plot: null };
  el.__chart = state; // read by the browser tests

  function build() {
    if (state.plot) state.plot.destroy();
    const span = state.to - state.from;
    const style = timeStyle(span);
    state.plot = new uPlot({
      width: Math.max(320, box.clientWidth || el.clientWidth || 600),
      height,
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Asia/Almaty"),
      legend: { show: false },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true, range: () => [state.from, state.to] }, y: { range: valueRange } },
      series: [{}, { label: state.label, stroke: colour, width: 2, spanGaps: false,
        fill: colour + "22", points: { show: (u) => state.data[0].length <= 120, size: 4 } }],
      axes: [
        { ...AXIS, font: FONT, labelFont: FONT, space: style === "time" ? 70 : 90,
          label: t("chart.time_axis", { zone: zoneLabel(state.to * 1000) }), labelSize: 22,
          values: (u, splits) => splits.map((v) => when(v * 1000, style)) },
        { ...AXIS, font: FONT, labelFont: FONT, label: unit(state.unitName) || " ", labelSize: 22,
          values: (u, splits) => splits.map((v) => number(v, Math.abs(v) < 10 ? 2 : Math.abs(v) < 100 ? 1 : 0)),
          size: valueAxisSize },
      ],
      hooks: { setCursor: [(u) => showReadout(u.cursor.idx)] },
    }, state.data, box);
  }

  function showReadout(idx) {
    if (idx === null || idx === undefined || state.data[0][idx] === undefined) {
      replace(readout);
      return;
    }
    const value = state.data[1][idx];
    replace(readout, raw(when(state.data[0][idx] * 1000, "full")), " ",
      value === null ? h("span", { class: "muted" }, t("chart.no_data")) : raw(`${number(value)} ${unit(state.unitName)}`.trim(), "b"));
  }

  const observer = new ResizeObserver(() => {
    if (state.plot && box.clientWidth) state.plot.setSize({ width: box.clientWidth, height });
  });
  observer.observe(box);

  return {
    state,
    update({ xs, ys, from, to, unitName, label }) {
      const rebuild = !state.plot || state.unitName !== unitName || state.label !== label
        || timeStyle(state.to - state.from) !== timeStyle(to - from);
      Object.assign(state, { from, to, unitName, label, data: [xs, ys] });
      if (rebuild) build();
      else state.plot.setData(state.data);
    },
    redraw: build,
    destroy() {
      observer.disconnect();
      if (state.plot) state.plot.destroy();
      state.plot = null;
    },
  };
}
