// Observability: realization status (NB / compiled / installed generations,
// per host), what the API knows of ports and LB members, and the events this
// page has seen. Packet counters are not served by the API yet: the page says
// so rather than inventing numbers.

import { age, clear, clock, h } from "./dom.js";
import { hostState, statusClass } from "./graph.js";
import { Poller, events, loadSnapshot } from "./state.js";

const badge = (text) => h("span", { class: `badge st-${statusClass(text)}` }, text);

function table(caption, columns, rows, empty) {
  if (!rows.length) return h("p", { class: "empty" }, empty);
  return h("div", { class: "table-wrap" }, h("table", {},
    h("caption", { class: "sr-only" }, caption),
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows.map((cells) => h("tr", { "data-name": String(cells[0]) }, cells.map((c) => h("td", {}, c)))))));
}

function realization(status) {
  const behind = status.nb_generation - status.compiled_generation;
  const installing = status.compiled_generation - status.installed_generation;
  let summary = "Everything written is compiled and installed.";
  if (behind > 0) summary = `The compiler is ${behind} generation(s) behind the NB store.`;
  else if (installing > 0) summary = `Hosts are installing generation ${status.compiled_generation}.`;
  if (!status.hosts.length) summary += " No host agent has reported yet.";
  const card = (title, value, id) => h("div", { class: "card", id }, h("span", { class: "card-title" }, title), h("span", { class: "card-value" }, String(value)));
  return h("section", { "aria-labelledby": "real-h" }, h("h2", { id: "real-h" }, "Realization"),
    h("div", { class: "cards" },
      card("NB generation", status.nb_generation, "gen-nb"),
      card("Compiled", status.compiled_generation, "gen-compiled"),
      card("Installed (lowest host)", status.installed_generation, "gen-installed")),
    h("p", { id: "realization-summary" }, summary));
}

/** The ports of VMs: not router, floating IP or load balancer VIP ports. */
function vmPorts(snap) {
  const vips = new Set(snap.loadbalancers.map((lb) => lb.vip_port_id));
  return snap.ports.filter((p) => !p.device_owner.startsWith("network:") && !vips.has(p.id));
}

function hosts(snap) {
  const { status } = snap;
  const ports = vmPorts(snap);
  const rows = status.hosts.map((host) => {
    const bound = ports.filter((p) => p["binding:host_id"] === host.host);
    const active = bound.filter((p) => p.status === "ACTIVE").length;
    return [host.host, badge(hostState(host, status, snap.now)), String(host.installed_generation),
      String(Math.max(0, status.compiled_generation - host.installed_generation)),
      age(host.reported_at, snap.now), `${active} active, ${bound.length - active} down`];
  });
  return h("section", { "aria-labelledby": "hosts-h" }, h("h2", { id: "hosts-h" }, "Hosts"),
    table("Hosts", ["Host", "State", "Installed", "Behind by", "Last report", "Ports (yours)"], rows,
      "No host has reported an installed generation yet (hosts report through their agents)."),
    h("p", { class: "hint" }, "A host is up when it has installed the compiled generation; lagging when it is behind; down when it is behind and has not reported for 30 s."));
}

function portStatus(snap) {
  const counts = {};
  for (const port of vmPorts(snap)) {
    const host = port["binding:host_id"] || "unbound";
    counts[host] ??= { ACTIVE: 0, DOWN: 0, other: 0 };
    const key = port.status in counts[host] ? port.status : "other";
    counts[host][key] += 1;
  }
  const rows = Object.entries(counts).map(([host, c]) => [host, String(c.ACTIVE), String(c.DOWN), String(c.other)]);
  return h("section", { "aria-labelledby": "ports-h" }, h("h2", { id: "ports-h" }, "Ports by host"),
    table("Ports by host", ["Host", "Active", "Down", "Other"], rows, "No port yet."));
}

function members(snap) {
  const pools = new Map(snap.pools.map((p) => [p.id, p]));
  const rows = Object.entries(snap.members).flatMap(([poolId, list]) =>
    list.map((m) => [`${m.address}:${m.protocol_port}`, pools.get(poolId)?.name || poolId.slice(0, 8), badge(m.operating_status), String(m.weight)]));
  return h("section", { "aria-labelledby": "members-h" }, h("h2", { id: "members-h" }, "Load balancer members"),
    table("Load balancer members", ["Member", "Pool", "Status", "Weight"], rows, "No load balancer member."));
}

function counters() {
  return h("section", { "aria-labelledby": "counters-h" }, h("h2", { id: "counters-h" }, "Counters and drops"),
    h("p", { id: "counters-note" }, "Per-port and per-host packet counters and drops by reason arrive with the host agents: ",
      "the API serves no counters yet. To see why a packet would be dropped now, use ", h("a", { href: "#/trace" }, "Trace"), "."));
}

function recent() {
  return h("section", { "aria-labelledby": "events-h" }, h("h2", { id: "events-h" }, "Recent events"),
    h("p", { class: "hint" }, "Changes this page has seen while open (it compares what the API answers every 3 s)."),
    h("ol", { class: "events", reversed: true }, events.slice(0, 30).map((e) =>
      h("li", { class: `ev-${e.level}` }, h("time", {}, clock(e.at)), " ", e.text))));
}

export async function observeView(root) {
  const updated = h("span", {}, "loading…");
  const body = h("div", {});
  const problem = h("p", { class: "form-error", role: "alert", hidden: true });
  root.append(h("h1", { tabindex: "-1" }, "Observability"), h("p", { class: "live" }, "Live, every 3 s — ", updated), problem, body);
  const poller = new Poller(loadSnapshot, (snap) => {
    problem.hidden = true;
    updated.textContent = `updated ${clock()}`;
    clear(body).append(realization(snap.status), hosts(snap), portStatus(snap), members(snap), counters(), recent());
  }, (err) => {
    problem.textContent = `Live update failed: ${err.message} (retrying).`;
    problem.hidden = false;
  });
  poller.start();
  return () => poller.stop();
}
