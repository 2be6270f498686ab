// What the live pages (topology, observability) poll, the poller itself, and
// the "recent events" log the GUI derives by comparing successive snapshots.

import { get, lists, serverNow } from "./api.js";
import { hostState } from "./graph.js";

export const POLL_MS = 3000;

/** One consistent-enough view of everything the topology draws. */
export async function loadSnapshot() {
  const [data, status] = await Promise.all([
    lists(["networks", "subnets", "ports", "routers", "floatingips", "loadbalancers", "pools"]),
    get("/v2.0/netvirt/status").then((d) => d.status),
  ]);
  const members = {};
  await Promise.all(
    data.pools.map(async (pool) => {
      members[pool.id] = (await get(`/v2/lbaas/pools/${pool.id}/members`)).members;
    }),
  );
  const snap = { ...data, members, status, now: serverNow() };
  record(snap);
  return snap;
}

/** Calls load every interval while the tab is visible; stop() ends it. */
export class Poller {
  constructor(load, onData, onError, interval = POLL_MS) {
    Object.assign(this, { load, onData, onError, interval, paused: false, stopped: true, timer: 0 });
    this.wake = () => {
      if (!document.hidden && !this.stopped) this.now();
    };
  }

  start() {
    this.stopped = false;
    document.addEventListener("visibilitychange", this.wake);
    this.tick();
  }

  stop() {
    this.stopped = true;
    window.clearTimeout(this.timer);
    document.removeEventListener("visibilitychange", this.wake);
  }

  now() {
    window.clearTimeout(this.timer);
    this.tick();
  }

  async tick() {
    if (this.stopped) return;
    if (!document.hidden && !this.paused) {
      try {
        const data = await this.load();
        if (!this.stopped) this.onData(data);
      } catch (err) {
        if (!this.stopped) this.onError(err);
      }
    }
    if (!this.stopped) this.timer = window.setTimeout(() => this.tick(), this.interval);
  }
}

// --- recent events ---------------------------------------------------------

const MAX_EVENTS = 100;
export const events = [];
let previous = null;

export function resetEvents() {
  events.length = 0;
  previous = null;
}

const name = (item) => item.name || item.floating_ip_address || String(item.id).slice(0, 8);
const KINDS = [
  ["networks", "network"],
  ["subnets", "subnet"],
  ["ports", "port"],
  ["routers", "router"],
  ["floatingips", "floating IP"],
  ["loadbalancers", "load balancer"],
];

function objectEvents(prev, next, out) {
  for (const [key, word] of KINDS) {
    const before = new Map(prev[key].map((i) => [i.id, i]));
    const after = new Map(next[key].map((i) => [i.id, i]));
    for (const [id, item] of after) {
      const old = before.get(id);
      if (!old) out.push(["info", `${word} ${name(item)} created`]);
      else if (key === "ports" && old.status !== item.status) {
        out.push([item.status === "ACTIVE" ? "info" : "warn", `port ${name(item)} ${old.status} → ${item.status}`]);
      }
      if (old && key === "ports" && old["binding:host_id"] !== item["binding:host_id"]) {
        out.push(["info", `port ${name(item)} bound to ${item["binding:host_id"] || "no host"}`]);
      }
    }
    for (const [id, item] of before) if (!after.has(id)) out.push(["info", `${word} ${name(item)} deleted`]);
  }
}

function memberEvents(prev, next, out) {
  const flat = (snap) => new Map(Object.values(snap.members).flat().map((m) => [m.id, m]));
  const before = flat(prev);
  for (const [id, m] of flat(next)) {
    const old = before.get(id);
    if (old && old.operating_status !== m.operating_status) {
      const level = m.operating_status === "ONLINE" ? "info" : "warn";
      out.push([level, `member ${m.address}:${m.protocol_port} ${old.operating_status} → ${m.operating_status}`]);
    }
  }
}

function realizationEvents(prev, next, out) {
  const a = prev.status;
  const b = next.status;
  if (a.nb_generation !== b.nb_generation) out.push(["info", `NB generation ${a.nb_generation} → ${b.nb_generation}`]);
  if (a.compiled_generation !== b.compiled_generation) {
    out.push(["info", `compiled generation ${a.compiled_generation} → ${b.compiled_generation}`]);
  }
  const before = new Map(a.hosts.map((host) => [host.host, hostState(host, a, prev.now)]));
  for (const host of b.hosts) {
    const state = hostState(host, b, next.now);
    if (!before.has(host.host)) out.push(["info", `host ${host.host} reported (generation ${host.installed_generation})`]);
    else if (before.get(host.host) !== state) out.push([state === "UP" ? "info" : "warn", `host ${host.host} is now ${state.toLowerCase()}`]);
  }
}

/** The differences between two snapshots, as [level, text] pairs. */
export function diff(prev, next) {
  const out = [];
  objectEvents(prev, next, out);
  memberEvents(prev, next, out);
  realizationEvents(prev, next, out);
  return out;
}

function record(snap) {
  const at = Date.now();
  if (previous) {
    for (const [level, text] of diff(previous, snap)) events.unshift({ at, level, text });
  } else {
    events.unshift({ at, level: "info", text: "watching started" });
  }
  events.splice(MAX_EVENTS);
  previous = snap;
}
