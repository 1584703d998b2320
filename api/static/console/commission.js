// Commissioning from a CSV file (POST /devices/bulk, text/csv): the API checks every row first;
// its 422 names each bad row and its 409 the ids already taken. The new logins are shown once
// and offered as a CSV download.
import { api, detailText } from "./api.js";
import { download, h, raw, replace } from "./dom.js";
import { t } from "./i18n.js";
import { number } from "./format.js";
import { refused } from "./actions.js";

function csvCell(value) {
  const text = String(value ?? "");
  return /[",\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

export function loginsCsv(created) {
  const lines = ["device_id,kind,district,username,password,topic_prefix"];
  for (const device of created) {
    lines.push([device.device_id, device.kind, device.district, device.mqtt.username,
      device.mqtt.password, device.mqtt.topic_prefix].map(csvCell).join(","));
  }
  return lines.join("\n") + "\n";
}

function rowErrors(detail) {
  return h("table", { class: "grid row-errors" },
    h("thead", {}, h("tr", {}, ["row", "field", "message"].map((column) =>
      h("th", { scope: "col" }, t(`commission.col.${column}`))))),
    h("tbody", {}, detail.map((error) => h("tr", {},
      h("td", { class: "num" }, raw(error.row === 0 ? "–" : number(error.row))),
      h("td", {}, raw(error.field || "–", "code")), h("td", {}, raw(error.message))))));
}

function created(result) {
  const csv = loginsCsv(result.created);
  const save = h("button", { type: "button", class: "primary" }, t("commission.download"));
  save.addEventListener("click", () => download("device-logins.csv", csv));
  return h("div", { class: "commission-result", dataset: { created: String(result.created.length) } },
    h("p", { role: "status" }, t("commission.created", { count: result.created.length,
      n: number(result.created.length), skipped: number(result.skipped.length) })),
    h("p", { class: "warning", role: "alert" }, t("commission.secret_once")), save,
    h("table", { class: "grid logins" },
      h("thead", {}, h("tr", {}, ["device", "username", "password", "topic_prefix"].map((column) =>
        h("th", { scope: "col" }, t(`commission.col.${column}`))))),
      h("tbody", {}, result.created.map((device) => h("tr", {},
        h("td", {}, raw(device.device_id)), h("td", {}, raw(device.mqtt.username, "code")),
        h("td", {}, raw(device.mqtt.password, "code")), h("td", {}, raw(device.mqtt.topic_prefix, "code")))))),
    result.skipped.length ? h("p", {}, t("commission.skipped"), " ", raw(result.skipped.join(", "))) : null);
}

/** The admin's commissioning panel; ``done`` runs after devices were created. */
export function commissionPanel(done) {
  const file = h("input", { type: "file", name: "file", accept: ".csv,text/csv", required: true });
  const skip = h("input", { type: "checkbox", name: "skip_existing" });
  const outcome = h("div", { class: "commission-outcome" });
  const submit = h("button", { type: "submit", class: "primary" }, t("commission.submit"));
  const form = h("form", { class: "commission" },
    h("p", { class: "muted" }, t("commission.hint")), raw("device_id,kind,district,lat,lon,enabled,metadata", "code"),
    h("label", {}, t("commission.file"), file),
    h("label", { class: "check" }, skip, t("commission.skip_existing")), submit);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!file.files.length) return;
    submit.disabled = true;
    replace(outcome);
    try {
      const text = await file.files[0].text();
      const result = await api.post("/devices/bulk", text, { contentType: "text/csv",
        params: skip.checked ? { skip_existing: true } : {} });
      replace(outcome, created(result));
      done();
    } catch (err) {
      if (err.status === 422 && Array.isArray(err.detail) && err.detail.length && err.detail[0].row !== undefined) {
        replace(outcome, h("p", { class: "inline-error", role: "alert" }, t("commission.bad_rows",
          { count: err.detail.length, n: number(err.detail.length) })), rowErrors(err.detail));
      } else if (err.status === 409 && err.detail && err.detail.ids) {
        replace(outcome, h("div", { class: "inline-error", role: "alert" },
          h("p", {}, t("commission.taken", { count: err.detail.ids.length, n: number(err.detail.ids.length) })),
          h("ul", { class: "taken" }, err.detail.ids.map((id) => h("li", {}, raw(id, "code")))),
          h("p", {}, t("commission.taken_hint"))));
      } else {
        replace(outcome, h("p", { class: "inline-error", role: "alert" },
          h("span", {}, t("commission.failed")), " ", raw(detailText(err.detail) || err.code)));
        refused(t("commission.submit"), err);
      }
    } finally {
      submit.disabled = false;
    }
  });
  return h("section", { class: "panel", "aria-labelledby": "commission-title" },
    h("h2", { id: "commission-title" }, t("commission.title")), form, outcome);
}
