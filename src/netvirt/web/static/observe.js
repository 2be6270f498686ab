// Observability: realization status (NB / compiled / installed generations,
// per host with its heartbeat), what the API knows of ports and LB members, the
// packet counters hosts report (per host for admins, per port for everyone, for
// the ports they may see) and the events this page has seen.

import { get } from "./api.js";
import { age, clear, clock, h } from "./dom.js";
import { hostState, statusClass } from "./graph.js";
import { Poller, events, loadSnapshot } from "./state.js";

/** Members read per-port counters one request per port: at most this many ports. */
const MAX_PORT_COUNTERS = 50;

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
      age(host.last_seen || host.reported_at, snap.now), `${active} active, ${bound.length - active} down`];
  });
  return h("section", { "aria-labelledby": "hosts-h" }, h("h2", { id: "hosts-h" }, "Hosts"),
    table("Hosts", ["Host", "State", "Installed", "Behind by", "Last seen", "Ports (yours)"], rows,
      "No host has reported an installed generation yet (hosts report through their agents)."),
    h("p", { class: "hint" }, "Hosts report every few seconds. A host is down when it has not been heard from for 10 s; otherwise up when it has installed the compiled generation, lagging when it is behind."));
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

const num = (n) => Number(n || 0).toLocaleString("en");
const dropTotal = (drops) => Object.values(drops || {}).reduce((a, b) => a + b, 0);
const dropText = (drops) => Object.entries(drops || {}).sort((a, b) => b[1] - a[1])
  .map(([reason, n]) => `${reason} ${num(n)}`).join(", ") || "none";

/** Counters the caller may see: every host's (admins) or its own ports' (members). */
async function loadCounters(snap, session) {
  if (session?.admin) {
    const hosts = (await get("/v2.0/netvirt/hosts")).hosts;
    const ports = hosts.flatMap((host) => host.ports.filter((p) => p.port_id).map((p) => ({ ...p, host: host.name })));
    return { hosts, ports };
  }
  const bound = vmPorts(snap).filter((p) => p["binding:host_id"]).slice(0, MAX_PORT_COUNTERS);
  const answers = await Promise.all(bound.map((p) =>
    get(`/v2.0/netvirt/ports/${encodeURIComponent(p.id)}/counters`).then((d) => d.counters, () => null)));
  return { hosts: null, ports: answers.filter((c) => c && c.host) };
}

function hostCounters(hosts) {
  const rows = hosts.map((host) => {
    const sum = (key) => host.ports.reduce((a, p) => a + p[key], 0);
    return [host.name, badge(host.state), num(sum("rx_packets")), num(sum("tx_packets")),
      `${num(host.tunnel.rx_packets)} / ${num(host.tunnel.tx_packets)}`, num(dropTotal(host.drops)), dropText(host.drops)];
  });
  return table("Counters per host", ["Host", "State", "From VMs (pkts)", "To VMs (pkts)", "Tunnel rx / tx", "Drops", "Drops by reason"], rows, "");
}

function portCounters(snap, ports) {
  const names = new Map(snap.ports.map((p) => [p.id, p.name || p.id.slice(0, 8)]));
  const rows = ports.map((c) => [names.get(c.port_id) || c.port_id.slice(0, 8), c.host, c.interface,
    num(c.rx_packets), num(c.rx_bytes), num(c.tx_packets), num(c.tx_bytes), dropText(c.drops)]);
  return table("Counters per port", ["Port", "Host", "Interface", "From VM (pkts)", "From VM (bytes)", "To VM (pkts)", "To VM (bytes)", "Drops by reason"], rows, "No port counters yet.");
}

function counters(snap, data) {
  const section = h("section", { "aria-labelledby": "counters-h" }, h("h2", { id: "counters-h" }, "Counters and drops"));
  const reported = data.ports.length || (data.hosts || []).some((host) => host.stats_at);
  if (!reported) {
    section.append(h("p", { id: "counters-note" }, "Per-port and per-host packet counters and drops by reason arrive with the host agents: ",
      "no host has reported counters for what you can see yet. To see why a packet would be dropped now, use ", h("a", { href: "#/trace" }, "Trace"), "."));
    return section;
  }
  if (data.hosts) section.append(hostCounters(data.hosts));
  section.append(portCounters(snap, data.ports),
    h("p", { class: "hint" }, "Counted by each host's datapath since it started, reported every few seconds. ",
      "Drops are explained in ", h("a", { href: "#/trace" }, "Trace"), " and in the API documentation."));
  return section;
}

function recent() {
  return h("section", { "aria-labelledby": "events-h" }, h("h2", { id: "events-h" }, "Recent events"),
    h("p", { class: "hint" }, "Changes this page has seen while open (it compares what the API answers every 3 s)."),
    h("ol", { class: "events", reversed: true }, events.slice(0, 30).map((e) =>
      h("li", { class: `ev-${e.level}` }, h("time", {}, clock(e.at)), " ", e.text))));
}

export async function observeView(root, session) {
  const updated = h("span", {}, "loading…");
  const body = h("div", {});
  const problem = h("p", { class: "form-error", role: "alert", hidden: true });
  root.append(h("h1", { tabindex: "-1" }, "Observability"), h("p", { class: "live" }, "Live, every 3 s — ", updated), problem, body);
  const load = async () => {
    const snap = await loadSnapshot();
    return { snap, data: await loadCounters(snap, session) };
  };
  const poller = new Poller(load, ({ snap, data }) => {
    problem.hidden = true;
    updated.textContent = `updated ${clock()}`;
    clear(body).append(realization(snap.status), hosts(snap), portStatus(snap), members(snap), counters(snap, data), recent());
  }, (err) => {
    problem.textContent = `Live update failed: ${err.message} (retrying).`;
    problem.hidden = false;
  });
  poller.start();
  return () => poller.stop();
}
