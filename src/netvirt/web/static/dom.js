// Small DOM helpers. Every piece of API data reaches the page through
// textContent or attribute values, never through innerHTML, so a resource
// named "<img onerror=...>" shows as text and runs nothing.

const SVG_NS = "http://www.w3.org/2000/svg";

function apply(el, attrs) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "text") {
      el.textContent = String(value);
    } else if (key === "class") {
      el.setAttribute("class", Array.isArray(value) ? value.filter(Boolean).join(" ") : value);
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Create an HTML element: h("a", {href: "#/x", class: "btn"}, "text", child). */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  apply(el, attrs);
  append(el, children);
  return el;
}

/** Same for SVG elements. */
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  apply(el, attrs);
  append(el, children);
  return el;
}

let counter = 0;
/** A page-unique id for label/aria wiring. */
export function uid(prefix = "id") {
  counter += 1;
  return `${prefix}-${counter}`;
}

/** Polite announcement for screen readers (and a visible toast). */
export function announce(message) {
  const region = document.getElementById("status");
  if (!region) return;
  region.textContent = "";
  // A fresh text node makes screen readers repeat identical messages too.
  window.setTimeout(() => {
    region.textContent = message;
  }, 30);
}

/** The page-level error region (role=alert): the API's message, verbatim. */
export function showError(message) {
  const region = document.getElementById("error");
  if (!region) return;
  region.textContent = message;
  region.hidden = !message;
}

export function clearError() {
  showError("");
}

export function shortId(id) {
  return id ? String(id).slice(0, 8) : "";
}

/** "web (3f2a1b9c)" style label for a resource. */
export function label(item) {
  if (!item) return "";
  return item.name ? item.name : shortId(item.id);
}

export function yesNo(value) {
  return value ? "yes" : "no";
}

/** Render any attribute value readably (lists, objects, booleans). */
export function show(value) {
  if (value === null || value === undefined || value === "") return "—";
  if (typeof value === "boolean") return yesNo(value);
  if (Array.isArray(value)) {
    if (!value.length) return "—";
    return value.map((v) => (typeof v === "object" ? JSON.stringify(v) : String(v))).join(", ");
  }
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

/** Relative age of an ISO timestamp against a reference time (ms). */
export function age(iso, now = Date.now()) {
  if (!iso) return "never";
  const seconds = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  return `${Math.round(seconds / 3600)} h ago`;
}

export function clock(ms = Date.now()) {
  return new Date(ms).toLocaleTimeString([], { hour12: false });
}
