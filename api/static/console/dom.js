// Small DOM helpers. Text that is data (ids, numbers, times, payloads) goes through raw(), which
// marks it data-raw; every other visible string comes from t() (tests/console/test_i18n.py).
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else if (name === "class") {
      el.className = value;
    } else if (name === "dataset") {
      Object.assign(el.dataset, value);
    } else if (name === "value" || name === "checked" || name === "disabled" || name === "hidden") {
      el[name] = value;
    } else {
      el.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Data shown as it is: marked so the translation check knows it is not interface text. */
export function raw(text, tag = "span", attrs = {}) {
  return h(tag, { ...attrs, "data-raw": "" }, text === null || text === undefined ? "–" : String(text));
}

export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export const $ = (selector, root = document) => root.querySelector(selector);

/** A message for the operator in the page's live region (errors never fail silently):
 * ``message`` from t(), ``detail`` the API's own words, shown as they are. */
export function notify(message, { kind = "error", detail = null } = {}) {
  const region = document.getElementById("notices");
  if (!region) return null;
  const close = h("button", { type: "button", class: "ghost", "aria-label": notify.closeLabel },
    "×");
  const item = h("div", { class: `notice notice-${kind}`, role: kind === "error" ? "alert" : "status" },
    h("span", {}, message), detail ? raw(detail, "span", { class: "notice-detail" }) : null, close);
  close.addEventListener("click", () => item.remove());
  region.append(item);
  if (kind !== "error") setTimeout(() => item.remove(), 6000);
  return item;
}
notify.closeLabel = "";

/** Offer text as a file download (a CSV of logins, for instance). */
export function download(filename, text, type = "text/csv") {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const link = h("a", { href: url, download: filename, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}
