// Device changes an admin makes (enable/disable, a new broker password), shared by the device
// list and a device's own view. A refused change shows the API's detail.
import { api, detailText } from "./api.js";
import { h, notify, raw } from "./dom.js";
import { t } from "./i18n.js";
import { devices } from "./store.js";

/** Show the API's refusal of an action: the translated action and the API's own detail. */
export function refused(action, err) {
  notify(t("error.refused", { action, status: err.status || t("error.no_answer") }),
    { detail: detailText(err.detail) || err.code });
}

export async function setEnabled(device, enabled) {
  try {
    const updated = await api.patch(`/devices/${encodeURIComponent(device.device_id)}`, { enabled });
    devices.set(updated.device_id, updated);
    notify(t(enabled ? "devices.enabled_done" : "devices.disabled_done", { id: updated.device_id }),
      { kind: "info" });
    return updated;
  } catch (err) {
    refused(t(enabled ? "devices.enable" : "devices.disable"), err);
    return null;
  }
}

/** A modal dialog; resolves when closed. */
export function dialog(title, body, { labelledBy = "dialog-title" } = {}) {
  const close = h("button", { type: "button", class: "primary" }, t("dialog.close"));
  const box = h("dialog", { class: "modal", "aria-labelledby": labelledBy },
    h("h2", { id: labelledBy }, title), body, h("div", { class: "dialog-actions" }, close));
  document.body.append(box);
  close.addEventListener("click", () => box.close());
  box.showModal();
  return new Promise((resolve) => box.addEventListener("close", () => { box.remove(); resolve(); }));
}

export function copyButton(text) {
  const button = h("button", { type: "button" }, t("dialog.copy"));
  button.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(text);
      button.textContent = t("dialog.copied");
    } catch {
      notify(t("dialog.copy_failed"));
    }
  });
  return button;
}

export async function rotateCredentials(device) {
  if (!window.confirm(t("devices.rotate_confirm", { id: device.device_id }))) return null;
  let login;
  try {
    login = await api.post(`/devices/${encodeURIComponent(device.device_id)}/credentials`);
  } catch (err) {
    refused(t("devices.rotate"), err);
    return null;
  }
  await dialog(t("devices.rotated_title", { id: device.device_id }), h("div", { class: "secret" },
    h("p", { class: "warning", role: "alert" }, t("devices.secret_once")),
    h("dl", {},
      h("dt", {}, t("devices.username")), h("dd", {}, raw(login.username, "code")),
      h("dt", {}, t("devices.password")),
      h("dd", {}, raw(login.password, "code", { class: "password", dataset: { secret: "" } }),
        copyButton(login.password)),
      h("dt", {}, t("devices.topic_prefix")), h("dd", {}, raw(login.topic_prefix, "code")))));
  return login;
}
