// The operators' console: header (navigation, feeds, the city's clock, language, key), and a
// router by location hash that renders one view at a time.
import { ApiError, apiKey, detailText, setApiKey, takeKeyFromLink } from "./api.js";
import { h, notify, raw, replace } from "./dom.js";
import { DICTIONARIES, LANGUAGES, language, onLanguageChange, setLanguage, t, translateStatic } from "./i18n.js";
import { when, zoneLabel } from "./format.js";
import { alerts, connectFeeds, feedState, loadSession, onAlerts, onFeedState, session } from "./store.js";
import * as overview from "./overview.js";
import * as area from "./area.js";
import * as device from "./device.js";
import * as devicesView from "./devices.js";
import * as alertsView from "./alerts.js";
import * as rules from "./rules.js";
import * as rejections from "./rejections.js";

const ROUTES = {
  overview: overview.render,
  city: area.render,
  district: area.render,
  device: device.render,
  devices: devicesView.render,
  alerts: alertsView.render,
  rules: rules.render,
  rejections: rejections.render,
};
const NAV = ["overview", "city", "alerts", "rules", "devices", "rejections"];
const main = document.getElementById("view");
let current = null;

function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

function parse() {
  const [name, ...params] = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  return ROUTES[name] ? { name, params } : { name: "overview", params: [] };
}

function route() {
  if (current) current.destroy();
  current = null;
  const { name, params } = parse();
  for (const link of document.querySelectorAll("#nav a")) {
    const active = link.dataset.route === name || (name === "district" && link.dataset.route === "overview");
    if (active) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  main.dataset.view = name;
  current = ROUTES[name](main, { go, params }) || { destroy() {} };
  main.focus({ preventScroll: true });
}

function header() {
  translateStatic();
  notify.closeLabel = t("notice.close");
  replace(document.getElementById("nav"), NAV.map((name) => h("a", { href: `#/${name}`, dataset: { route: name } },
    t(`nav.${name}`), name === "alerts" ? h("span", { class: "badge", id: "alert-badge", "aria-live": "polite" }) : null)));
  const picker = document.getElementById("language");
  replace(picker, LANGUAGES.map((lang) => h("option", { value: lang, "data-raw": "" }, DICTIONARIES[lang]["lang.name"])));
  picker.value = language();
  badge();
  feeds();
  whoami();
  tick();
}

function badge() {
  const element = document.getElementById("alert-badge");
  if (!element) return;
  const open = [...alerts.values()].filter((alert) => alert.state === "open").length;
  element.textContent = open ? String(open) : "";
  element.title = t("alert.open_count", { count: open, n: open });
}

function feeds() {
  const pill = document.getElementById("connection");
  const state = feedState.readings === "live" && feedState.alerts === "live" ? "live"
    : feedState.readings === "down" || feedState.alerts === "down" ? "down" : "connecting";
  pill.dataset.state = state;
  pill.textContent = t(`feed.${state}`);
}

function whoami() {
  const who = document.getElementById("whoami");
  if (!session.me) return replace(who);
  replace(who, raw(session.me.name, "b"), " ", h("span", { class: `role role-${session.me.role}` },
    t(`role.${session.me.role}`)));
}

function tick() {
  const clock = document.getElementById("clock");
  replace(clock, raw(when(Date.now(), "seconds"), "time"), " ", h("span", {}, zoneLabel()));
}

function keyPrompt(problem) {
  replace(main, h("section", { class: "panel key-prompt" }, h("h2", {}, t("key.title")),
    h("p", {}, t("key.explain")), problem ? h("p", { class: "inline-error", role: "alert" },
      h("span", {}, t("key.refused")), " ", raw(problem)) : null));
  document.getElementById("api-key").focus();
}

async function start() {
  takeKeyFromLink();
  document.documentElement.lang = language();
  header();
  document.getElementById("api-key").value = apiKey();
  if (!apiKey()) return keyPrompt(null);
  try {
    await loadSession();
  } catch (err) {
    return keyPrompt(err instanceof ApiError ? detailText(err.detail) || err.code : String(err));
  }
  whoami();
  connectFeeds();
  onFeedState(feeds);
  onAlerts(badge);
  window.addEventListener("hashchange", route);
  route();
}

document.getElementById("language").addEventListener("change", (event) => setLanguage(event.target.value));
onLanguageChange(() => {
  header();
  if (session.me) route();
  else keyPrompt(null);
});
document.getElementById("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  setApiKey(document.getElementById("api-key").value.trim());
  location.reload();
});
setInterval(tick, 1000);
start();
