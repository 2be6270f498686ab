// Entry point: sign-in with a token, the navigation (hash routes), and the
// view switch. Every view gets a fresh root; a view that returns a function
// gets it called when the user leaves (to stop polling).

import { clearToken, get, setToken, token } from "./api.js";
import { announce, clear, clearError, h, showError } from "./dom.js";
import { detailView, listView } from "./resources.js";
import { SPECS, SPEC_BY_KEY } from "./specs.js";
import { observeView } from "./observe.js";
import { resetEvents } from "./state.js";
import { topologyView } from "./topology.js";
import { traceView } from "./trace.js";

const NAV = [
  ["topology", "Topology"],
  ...SPECS.map((spec) => [spec.key, spec.title]),
  ["trace", "Trace"],
  ["observability", "Observability"],
];

let session = null;
let cleanup = null;
let renderSeq = 0;
let firstRender = true;

async function whoami(secret) {
  const me = await get("/v2.0/netvirt/whoami", { token: secret });
  let project = me.project_id;
  try {
    const { projects } = await get("/v2.0/netvirt/projects", { token: secret });
    project = projects.find((p) => p.id === me.project_id)?.name || project;
  } catch {
    // the name is a nicety; the id is enough
  }
  return { project_id: me.project_id, project, role: me.role, admin: me.role === "admin" };
}

function parseHash() {
  const raw = window.location.hash.replace(/^#\/?/, "");
  const [path, query = ""] = raw.split("?");
  const [route = "", id = ""] = path.split("/");
  return { route: route || "topology", id: decodeURIComponent(id), params: new URLSearchParams(query) };
}

function shell() {
  const nav = document.getElementById("nav");
  const identity = document.getElementById("identity");
  const toggle = document.getElementById("nav-toggle");
  nav.hidden = !session;
  identity.hidden = !session;
  toggle.hidden = !session;
  if (!session) return;
  document.getElementById("who").textContent = `${session.project} (${session.role})`;
  const list = clear(nav.querySelector("ul"));
  for (const [key, title] of NAV) {
    list.append(h("li", {}, h("a", { href: `#/${key}`, "data-route": key }, title)));
  }
}

function markNav(route) {
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.dataset.route === route) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.getElementById("nav").classList.remove("open");
  document.getElementById("nav-toggle").setAttribute("aria-expanded", "false");
}

function loginView(root) {
  const input = h("input", { id: "token", type: "password", autocomplete: "off", spellcheck: "false", "aria-describedby": "token-help", "aria-required": "true" });
  const error = h("p", { class: "form-error", role: "alert", id: "login-error", hidden: true });
  const button = h("button", { type: "submit", class: "primary" }, "Sign in");
  const form = h("form", { novalidate: true, class: "login" },
    h("h1", { tabindex: "-1" }, "Sign in to netvirt"),
    h("div", { class: "field" }, h("label", { for: "token" }, "Token"), input,
      h("p", { class: "hint", id: "token-help" },
        "An admin or member token (netvirt admin token create PROJECT). It stays in this browser tab only ",
        "and is sent to the API as X-Auth-Token; you see exactly what the API shows this token.")),
    error, button);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const secret = input.value.trim();
    error.hidden = false;
    if (!secret) {
      error.textContent = "Token is required.";
      input.setAttribute("aria-invalid", "true");
      input.focus();
      return;
    }
    button.disabled = true;
    try {
      session = await whoami(secret);
      setToken(secret);
      error.hidden = true;
      shell();
      announce(`Signed in as ${session.project} (${session.role}).`);
      if (!window.location.hash || window.location.hash === "#/") window.location.hash = "#/topology";
      else render();
    } catch (err) {
      error.textContent = err.message;
      input.setAttribute("aria-invalid", "true");
      input.focus();
    } finally {
      button.disabled = false;
    }
  });
  root.append(form);
  input.focus();
}

function notFound(root) {
  root.append(h("h1", { tabindex: "-1" }, "Not found"), h("p", {}, h("a", { href: "#/topology" }, "Back to the topology")));
}

async function show(root, route, id, params) {
  if (route === "topology") return topologyView(root, session);
  if (route === "trace") return traceView(root, session, params);
  if (route === "observability") return observeView(root, session);
  const spec = SPEC_BY_KEY[route];
  if (!spec) return notFound(root);
  return id ? detailView(root, session, spec, id) : listView(root, session, spec);
}

async function render() {
  const seq = ++renderSeq;
  if (cleanup) cleanup();
  cleanup = null;
  clearError();
  for (const dialog of document.querySelectorAll("dialog")) dialog.remove();
  const view = clear(document.getElementById("view"));
  const root = h("div", { class: "view-root" });
  view.append(root);
  if (!session) {
    loginView(root);
    document.title = "Sign in — netvirt";
    return;
  }
  const { route, id, params } = parseHash();
  markNav(route);
  let stop = null;
  try {
    stop = await show(root, route, id, params);
  } catch (err) {
    if (seq === renderSeq) showError(err.message);
  }
  if (seq !== renderSeq) {
    if (typeof stop === "function") stop();
    return;
  }
  cleanup = typeof stop === "function" ? stop : null;
  const heading = root.querySelector("h1");
  document.title = `${heading ? heading.textContent : "netvirt"} — netvirt`;
  if (!firstRender) heading?.focus();
  firstRender = false;
}

function logout(message) {
  clearToken();
  session = null;
  resetEvents();
  shell();
  render();
  if (message) showError(message);
  else announce("Signed out.");
}

async function start() {
  document.getElementById("logout").addEventListener("click", () => logout());
  document.getElementById("skip").addEventListener("click", (event) => {
    event.preventDefault();
    document.getElementById("main").focus();
  });
  const toggle = document.getElementById("nav-toggle");
  toggle.addEventListener("click", () => {
    const open = toggle.getAttribute("aria-expanded") !== "true";
    toggle.setAttribute("aria-expanded", String(open));
    document.getElementById("nav").classList.toggle("open", open);
  });
  document.getElementById("nav").addEventListener("click", (event) => {
    if (!event.target.closest("a")) return;
    toggle.setAttribute("aria-expanded", "false");
    document.getElementById("nav").classList.remove("open");
  });
  window.addEventListener("netvirt:unauthorized", (event) => {
    if (session) logout(`Signed out: ${event.detail}`);
  });
  window.addEventListener("hashchange", render);
  const saved = token();
  if (saved) {
    try {
      session = await whoami(saved);
    } catch {
      clearToken();
    }
  }
  shell();
  render();
}

start();
