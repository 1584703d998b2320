// Numbers and times for the chosen language, every time in the city's zone, Asia/Almaty.
import { locale, t, tMaybe } from "./i18n.js";

export const CITY_ZONE = "Asia/Almaty";
const cache = new Map();

function formatter(kind, options) {
  const loc = kind === "number" ? locale().numbers : locale().dates;
  const cacheKey = kind + loc + JSON.stringify(options);
  let f = cache.get(cacheKey);
  if (!f) {
    f = kind === "number" ? new Intl.NumberFormat(loc, options)
      : new Intl.DateTimeFormat(loc, { timeZone: CITY_ZONE, hourCycle: "h23", ...options });
    cache.set(cacheKey, f);
  }
  return f;
}

/** A number with the locale's separators; ``digits``: most fraction digits (default by size). */
export function number(value, digits) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  const most = digits ?? (Math.abs(value) >= 100 ? 0 : Math.abs(value) >= 10 ? 1 : 2);
  return formatter("number", { maximumFractionDigits: most }).format(value);
}

/** A fraction (0.42) as a percentage in the locale's style. */
export function percent(fraction, digits = 0) {
  if (fraction === null || fraction === undefined) return "–";
  return formatter("number", { style: "percent", maximumFractionDigits: digits }).format(fraction);
}

function toDate(value) {
  return value instanceof Date ? value : new Date(value);
}

const STYLES = {
  time: { hour: "2-digit", minute: "2-digit" },
  seconds: { hour: "2-digit", minute: "2-digit", second: "2-digit" },
  date: { day: "numeric", month: "short", year: "numeric" },
  datetime: { day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" },
  full: { day: "numeric", month: "short", year: "numeric", hour: "2-digit", minute: "2-digit",
    second: "2-digit" },
  daymonth: { day: "numeric", month: "short" },
  month: { month: "short", year: "numeric" },
};
const NUMERIC_MONTHS = { month: "2-digit", day: "2-digit" };

/** A moment in Almaty time; style one of time, seconds, date, datetime, full, month. */
export function when(value, style = "datetime") {
  if (value === null || value === undefined) return "–";
  let options = STYLES[style];
  if (!locale().monthNames && options.month) {
    options = { ...options, ...NUMERIC_MONTHS, ...(options.day ? {} : { day: undefined }) };
  }
  return formatter("date", options).format(toDate(value));
}

/** Almaty's offset from UTC at a moment, e.g. "UTC+5". */
export function zoneOffset(value = Date.now()) {
  const parts = new Intl.DateTimeFormat("en-GB", { timeZone: CITY_ZONE, timeZoneName: "shortOffset" })
    .formatToParts(toDate(value));
  const name = parts.find((part) => part.type === "timeZoneName").value;
  return name === "GMT" ? "UTC" : name.replace("GMT", "UTC");
}

/** The label every time is shown with: "Almaty, UTC+5" in the chosen language. */
export function zoneLabel(value = Date.now()) {
  return t("clock.zone", { offset: zoneOffset(value) });
}

function offsetMinutes(ms) {
  const match = zoneOffset(ms).match(/UTC([+-])(\d+)(?::(\d+))?/);
  if (!match) return 0;
  return (match[1] === "-" ? -1 : 1) * (Number(match[2]) * 60 + Number(match[3] || 0));
}

/** "2026-12-02T14:05" read as Almaty wall-clock time (datetime-local inputs), as epoch ms. */
export function fromAlmatyInput(text) {
  const match = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})/.exec(text || "");
  if (!match) return null;
  const wall = Date.UTC(+match[1], +match[2] - 1, +match[3], +match[4], +match[5]);
  let utc = wall - offsetMinutes(wall) * 60000;
  utc = wall - offsetMinutes(utc) * 60000; // the offset at the moment itself, not at the guess
  return utc;
}

/** Epoch ms as the value of a datetime-local input, in Almaty wall-clock time. */
export function toAlmatyInput(ms) {
  const shifted = new Date(ms + offsetMinutes(ms) * 60000);
  return shifted.toISOString().slice(0, 16);
}

/** A contract unit in the chosen language (units are dictionary keys "unit.<unit>"). */
export function unit(name) {
  if (!name || name === "-") return "";
  return tMaybe(`unit.${name}`, name);
}

/** A duration in seconds, in the largest whole unit ("15 min", "2 h", "1 d"). */
export function duration(seconds) {
  if (seconds % 86400 === 0 && seconds >= 172800) return t("duration.days", { count: seconds / 86400, n: number(seconds / 86400) });
  if (seconds % 3600 === 0) return t("duration.hours", { count: seconds / 3600, n: number(seconds / 3600) });
  if (seconds % 60 === 0) return t("duration.minutes", { count: seconds / 60, n: number(seconds / 60) });
  return t("duration.seconds", { count: seconds, n: number(seconds) });
}

/** A measured length of time in its largest unit, to a tenth ("1.5 h"). */
export function elapsed(seconds) {
  const round = (value) => Math.round(value * 10) / 10;
  if (seconds >= 86400) return t("duration.days", { count: round(seconds / 86400), n: number(round(seconds / 86400), 1) });
  if (seconds >= 3600) return t("duration.hours", { count: round(seconds / 3600), n: number(round(seconds / 3600), 1) });
  if (seconds >= 60) return t("duration.minutes", { count: Math.round(seconds / 60), n: number(Math.round(seconds / 60), 0) });
  return t("duration.seconds", { count: Math.round(seconds), n: number(Math.round(seconds), 0) });
}
