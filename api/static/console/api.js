// The API client: the operator's key, JSON requests, and the API's one error shape
// {"error", "detail"} turned into an ApiError the views show (never swallowed).
export const API = "/api/v1";
const KEY_STORAGE = "apiKey";

/** The key from the link `make run` prints (#key=...), else the one this browser kept. The
 * link's key is taken out of the address bar at once (history, screenshots). */
export function takeKeyFromLink() {
  const match = /(?:^#|[#&?])key=([^&]+)/.exec(location.hash);
  if (match) {
    localStorage.setItem(KEY_STORAGE, decodeURIComponent(match[1]));
    history.replaceState(null, "", location.pathname + location.search + "#/overview");
  }
  return apiKey();
}

export function apiKey() {
  return localStorage.getItem(KEY_STORAGE) || "";
}

export function setApiKey(key) {
  if (key) localStorage.setItem(KEY_STORAGE, key);
  else localStorage.removeItem(KEY_STORAGE);
}

export class ApiError extends Error {
  constructor(status, code, detail) {
    super(`${status} ${code}`);
    this.status = status;
    this.code = code;
    this.detail = detail;
  }
}

function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params || {})) {
    if (value === null || value === undefined || value === "") continue;
    for (const item of Array.isArray(value) ? value : [value]) search.append(name, String(item));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

async function request(method, path, { params, body, contentType = "application/json" } = {}) {
  const headers = { Accept: "application/json", Authorization: `Bearer ${apiKey()}` };
  let payload;
  if (body !== undefined) {
    headers["Content-Type"] = contentType;
    payload = contentType === "application/json" ? JSON.stringify(body) : body;
  }
  let response;
  try {
    response = await fetch(API + path + query(params), { method, headers, body: payload });
  } catch (error) {
    throw new ApiError(0, "network_error", String(error.message || error));
  }
  if (response.status === 204) return null;
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    throw new ApiError(response.status, data?.error || `http_${response.status}`,
      data?.detail ?? text ?? response.statusText);
  }
  return data;
}

export const api = {
  get: (path, params) => request("GET", path, { params }),
  post: (path, body, options = {}) => request("POST", path, { body, ...options }),
  patch: (path, body) => request("PATCH", path, { body }),
  delete: (path) => request("DELETE", path),
};

/** The API's ``detail`` as one readable line: a string as it is, validation errors as
 * "field: message" joined, other objects by their message. */
export function detailText(detail) {
  if (detail === null || detail === undefined) return "";
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail.map((item) => {
      if (typeof item !== "object" || item === null) return String(item);
      const where = item.row !== undefined ? `#${item.row}${item.field ? " " + item.field : ""}`
        : (item.loc || []).filter((part) => part !== "body").join(".");
      return `${where ? where + ": " : ""}${item.msg || item.message || JSON.stringify(item)}`;
    }).join("; ");
  }
  if (detail.message) {
    return detail.ids ? `${detail.message}: ${detail.ids.join(", ")}` : detail.message;
  }
  return JSON.stringify(detail);
}

/** A URL of a live feed: EventSource cannot send headers, so the key goes in the query. */
export function feedUrl(path, params = {}) {
  return API + path + query({ ...params, access_token: apiKey() });
}
