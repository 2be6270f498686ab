// The only way the GUI reaches the server: the public REST API, same origin,
// with the token the user logged in with (kept in sessionStorage, so it
// lives only as long as the tab) sent as X-Auth-Token on every call.

const KEY = "netvirt.token";

export class ApiError extends Error {
  constructor(status, type, message) {
    super(message);
    this.status = status;
    this.type = type;
  }
}

export function token() {
  return window.sessionStorage.getItem(KEY);
}

export function setToken(value) {
  window.sessionStorage.setItem(KEY, value);
}

export function clearToken() {
  window.sessionStorage.removeItem(KEY);
}

/** Server time of the last response (the Date header), for ages of reports. */
export let serverNow = () => Date.now();

function noteServerDate(resp) {
  const date = Date.parse(resp.headers.get("date") || "");
  if (Number.isNaN(date)) return;
  const skew = date - Date.now();
  serverNow = () => Date.now() + skew;
}

async function parse(resp) {
  const text = await resp.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/** Call the API; resolve with the JSON body, reject with ApiError carrying the
 * NeutronError type and message exactly as the server wrote them. */
export async function request(method, path, body, options = {}) {
  const secret = options.token ?? token();
  const headers = { Accept: "application/json" };
  if (secret) headers["X-Auth-Token"] = secret;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let resp;
  try {
    resp = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
    });
  } catch (err) {
    throw new ApiError(0, "NetworkError", `The server cannot be reached (${err.message}).`);
  }
  noteServerDate(resp);
  const data = await parse(resp);
  if (resp.ok) return data;
  const neutron = data && typeof data === "object" ? data.NeutronError : null;
  const error = new ApiError(
    resp.status,
    neutron?.type ?? `HTTP ${resp.status}`,
    neutron?.message ?? (typeof data === "string" && data ? data : resp.statusText),
  );
  if (resp.status === 401 && !options.token) {
    window.dispatchEvent(new CustomEvent("netvirt:unauthorized", { detail: error.message }));
  }
  throw error;
}

export const get = (path, options) => request("GET", path, undefined, options);
export const post = (path, body) => request("POST", path, body);
export const put = (path, body) => request("PUT", path, body);
export const del = (path) => request("DELETE", path);

/** The collections the GUI reads: [path, key of the list in the answer]. */
export const COLLECTIONS = {
  networks: ["/v2.0/networks", "networks"],
  subnets: ["/v2.0/subnets", "subnets"],
  ports: ["/v2.0/ports", "ports"],
  routers: ["/v2.0/routers", "routers"],
  floatingips: ["/v2.0/floatingips", "floatingips"],
  security_groups: ["/v2.0/security-groups", "security_groups"],
  qos_policies: ["/v2.0/qos/policies", "policies"],
  loadbalancers: ["/v2/lbaas/loadbalancers", "loadbalancers"],
  listeners: ["/v2/lbaas/listeners", "listeners"],
  pools: ["/v2/lbaas/pools", "pools"],
  healthmonitors: ["/v2/lbaas/healthmonitors", "healthmonitors"],
  projects: ["/v2.0/netvirt/projects", "projects"],
};

export async function list(name) {
  const [path, key] = COLLECTIONS[name];
  const data = await get(path);
  return data[key];
}

/** Several collections at once: {networks: [...], subnets: [...]}. */
export async function lists(names) {
  const values = await Promise.all(names.map((name) => list(name)));
  return Object.fromEntries(names.map((name, i) => [name, values[i]]));
}
