// Translations: one dictionary module per language (static/i18n/*.js). t() is the only source of
// interface text; it records what it produced so the tests can prove no string bypassed it.
import en from "../i18n/en.js";
import ru from "../i18n/ru.js";
import kk from "../i18n/kk.js";

export const DICTIONARIES = { en, ru, kk };
export const LANGUAGES = Object.keys(DICTIONARIES);
const STORAGE_KEY = "consoleLanguage";

// Intl locales per language. Chromium's ICU carries no Kazakh number or month data (kk formats as
// the root locale: "180,990.5", "M12"), so Kazakh numbers use the Kazakhstan convention through
// ru-KZ (space groups, decimal comma) and Kazakh dates are numeric, without month names.
const LOCALES = {
  en: { intl: "en-GB", numbers: "en-GB", dates: "en-GB", monthNames: true },
  ru: { intl: "ru-RU", numbers: "ru-RU", dates: "ru-RU", monthNames: true },
  kk: { intl: "kk-KZ", numbers: "ru-KZ", dates: "ru-KZ", monthNames: false },
};

let current = initialLanguage();
const emitted = new Set();
const missing = new Set();
const listeners = new Set();
// Read by the browser tests only.
window.__i18n = { emitted, missing, get language() { return current; } };

function initialLanguage() {
  const stored = localStorage.getItem(STORAGE_KEY);
  if (stored && DICTIONARIES[stored]) return stored;
  const preferred = (navigator.language || "en").slice(0, 2);
  return DICTIONARIES[preferred] ? preferred : "en";
}

export function language() {
  return current;
}

export function locale() {
  return LOCALES[current];
}

export function setLanguage(lang) {
  if (!DICTIONARIES[lang] || lang === current) return;
  current = lang;
  localStorage.setItem(STORAGE_KEY, lang);
  document.documentElement.lang = lang;
  emitted.clear();
  for (const listener of listeners) listener(lang);
}

export function onLanguageChange(listener) {
  listeners.add(listener);
}

/** The text of ``key`` in the current language, with {name} placeholders filled from params;
 * a value that is an object is chosen by plural category of ``params.count``. */
export function t(key, params = {}) {
  let entry = DICTIONARIES[current][key];
  if (entry === undefined) {
    missing.add(key);
    entry = en[key] ?? key;
  }
  if (typeof entry === "object") {
    const category = new Intl.PluralRules(LOCALES[current].numbers).select(params.count ?? 0);
    entry = entry[category] ?? entry.other;
  }
  const text = entry.replace(/\{(\w+)\}/g, (_, name) =>
    params[name] === undefined ? `{${name}}` : String(params[name]));
  emitted.add(text);
  return text;
}

/** t() of ``key`` if the dictionary has it, else ``fallback`` (data from the API, as it is). */
export function tMaybe(key, fallback) {
  return DICTIONARIES[current][key] !== undefined ? t(key) : fallback;
}

/** Fill the static markup: data-i18n (text), data-i18n-title, -aria-label, -placeholder. */
export function translateStatic(root = document) {
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const attr of ["title", "aria-label", "placeholder"]) {
    for (const el of root.querySelectorAll(`[data-i18n-${attr}]`)) {
      el.setAttribute(attr, t(el.getAttribute(`data-i18n-${attr}`)));
    }
  }
}
