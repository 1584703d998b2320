// The city plan: districts as areas, the Kapchagay reservoir, sensors coloured by status.
import { AREAS, DISTRICTS, RESERVOIR, RESERVOIR_LABEL, centroid, position, toLatLng } from "./geometry.js";
import { h, raw } from "./dom.js";
import { t } from "./i18n.js";
import { STATUSES, devices, statusOf } from "./store.js";

export const STATUS_COLOURS = {
  online: "#3fb950", silent: "#e3b341", offline: "#f85149", unknown: "#8b9bab", disabled: "#6e7681",
};

/** The legend of the status colours, for every view that colours devices. */
export function statusLegend() {
  return h("ul", { class: "legend", "aria-label": t("legend.title") },
    STATUSES.map((status) => h("li", {},
      h("span", { class: "swatch", style: `background:${STATUS_COLOURS[status]}`, "aria-hidden": "true" }),
      h("span", {}, t(`status.${status}`)),
      h("small", {}, t(`status.${status}.hint`)))));
}

/** A plan in ``el``; ``only`` limits it to one district. Returns {update, destroy}. */
export function createPlan(el, { only = null, onDistrict = null, onDevice = null } = {}) {
  const map = L.map(el, {
    crs: L.CRS.Simple, minZoom: 2, maxZoom: 7, zoomSnap: 0.25, attributionControl: false,
    zoomControl: false,
  });
  L.control.zoom({ zoomInTitle: t("plan.zoom_in"), zoomOutTitle: t("plan.zoom_out") }).addTo(map);
  L.polygon(RESERVOIR.map(toLatLng), { color: "#1f6feb", weight: 1, fillColor: "#1f6feb",
    fillOpacity: 0.25, interactive: false }).addTo(map)
    .bindTooltip(t("plan.reservoir"), { permanent: true, direction: "center", className: "water-label" })
    .openTooltip(toLatLng(RESERVOIR_LABEL));
  const bounds = [];
  for (const [name, district] of Object.entries(DISTRICTS)) {
    const corners = AREAS[name].map(toLatLng);
    const focus = !only || only === name;
    const polygon = L.polygon(corners, { color: district.colour, weight: focus ? 2 : 1,
      fillOpacity: focus ? 0.12 : 0.03, className: `district district-${name}` }).addTo(map);
    polygon.bindTooltip(t(`district.${name}`), { permanent: true, direction: "center",
      className: "district-label", offset: [0, 0] });
    polygon.getTooltip().setLatLng(toLatLng(centroid(AREAS[name])));
    if (onDistrict) polygon.on("click", () => onDistrict(name));
    if (focus) bounds.push(...corners);
  }
  if (!only) bounds.push(...RESERVOIR.slice(0, 3).map(toLatLng));
  map.fitBounds(bounds, { padding: [12, 12] });
  const markers = new Map();
  window.__plan = { markers, areas: AREAS }; // read by the browser tests

  function tooltip(id, placed) {
    const device = devices.get(id);
    if (!device) return "";
    const status = statusOf(device);
    return h("div", {}, raw(device.device_id, "b"), h("br"),
      h("span", {}, t(`kind.${device.kind}`)), " · ", h("span", {}, t(`status.${status}`)),
      placed ? h("div", { class: "muted" },
        t(device.location ? "plan.placed_outside" : "plan.placed_no_location")) : null);
  }

  function update() {
    for (const device of devices.values()) {
      if (only && device.district !== only) continue;
      const status = statusOf(device);
      let entry = markers.get(device.device_id);
      if (!entry) {
        const { point, placed } = position(device);
        const marker = L.circleMarker(toLatLng(point), { radius: 5, weight: 1, fillOpacity: 0.9,
          className: "sensor" }).addTo(map);
        const id = device.device_id;
        marker.bindTooltip(() => tooltip(id, placed));
        if (onDevice) marker.on("click", () => onDevice(id));
        entry = { marker, point, placed, district: device.district, status: null };
        markers.set(id, entry);
      }
      if (entry.status !== status) {
        entry.status = status;
        entry.marker.setStyle({ color: "#0d1117", fillColor: STATUS_COLOURS[status] });
      }
    }
    for (const [id, entry] of markers) {
      if (!devices.has(id)) {
        entry.marker.remove();
        markers.delete(id);
      }
    }
  }

  update();
  return { update, destroy: () => map.remove(), map };
}
