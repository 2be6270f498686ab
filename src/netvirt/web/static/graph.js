// The topology as a graph (pure functions: no DOM, no fetch), and its
// layered layout: external networks on top, then routers and floating IPs,
// then networks, then ports and load balancers; for admins the ports are
// grouped by the host (chassis) they are bound to.

export const LAYER = { external: 0, router: 1, fip: 1, network: 2, port: 3, lb: 3, member: 3 };
export const SIZE = { w: 168, h: 54, gapX: 22, gapY: 96, pad: 24, groupPad: 10, groupLabel: 20, arc: 44, arcLabel: 16 };
/** A host behind the compiled generation that has not reported for this long is down. */
export const STALE_MS = 30000;

const label = (item) => (item.name ? item.name : String(item.id).slice(0, 8));
const ips = (port) => port.fixed_ips.map((ip) => ip.ip_address).join(", ");

/** Status words of the API mapped to four colours (up, down, pending, unknown). */
export function statusClass(raw) {
  const value = String(raw || "").toUpperCase();
  if (["ACTIVE", "ONLINE", "UP"].includes(value)) return "up";
  if (["DOWN", "OFFLINE", "ERROR"].includes(value)) return "down";
  if (["BUILD", "DEGRADED", "DRAINING", "LAGGING"].includes(value) || value.startsWith("PENDING")) {
    return "pending";
  }
  return "unknown";
}

/** down: silent (the API's heartbeat says not alive); up: alive and has installed the
 * compiled generation; lagging: alive but behind. Without a heartbeat field (an older
 * server) a host behind and silent for STALE_MS is down. */
export function hostState(host, status, now) {
  if (host.alive === false) return "DOWN";
  if (host.installed_generation >= status.compiled_generation) return "UP";
  if (host.alive === true) return "LAGGING";
  const age = now - Date.parse(host.reported_at);
  return Number.isFinite(age) && age > STALE_MS ? "DOWN" : "LAGGING";
}

function memberPort(ports, member) {
  return ports.find((p) =>
    p.fixed_ips.some(
      (ip) => ip.ip_address === member.address && (!member.subnet_id || ip.subnet_id === member.subnet_id),
    ),
  );
}

function addNetworks(g, snap) {
  for (const n of snap.networks) {
    const cidrs = snap.subnets.filter((s) => s.network_id === n.id).map((s) => s.cidr);
    g.add({
      id: n.id,
      kind: n["router:external"] ? "external" : "network",
      name: label(n),
      sub: cidrs.join(" ") || "no subnet",
      status: n.admin_state_up ? n.status : "DOWN",
      route: "networks",
      info: { CIDRs: cidrs.join(", ") || "none", MTU: n.mtu, Shared: n.shared ? "yes" : "no" },
    });
  }
}

function addRouters(g, snap) {
  for (const r of snap.routers) {
    const gw = r.external_gateway_info;
    const gwIp = (gw?.external_fixed_ips || []).map((ip) => ip.ip_address).join(", ");
    g.add({
      id: r.id,
      kind: "router",
      name: label(r),
      sub: gwIp ? `gw ${gwIp}` : "no gateway",
      status: r.status,
      route: "routers",
      info: { Gateway: gwIp || "none", SNAT: gw?.network_id ? String(gw.enable_snat) : "—", Routes: r.routes.length },
    });
    if (gw?.network_id) g.edge(gw.network_id, r.id, "gateway", gwIp);
  }
}

function addPorts(g, snap) {
  const vips = new Set(snap.loadbalancers.map((lb) => lb.vip_port_id));
  for (const p of snap.ports) {
    if (p.device_owner === "network:router_interface") {
      g.edge(p.device_id, p.network_id, "interface", ips(p));
      continue;
    }
    if (p.device_owner.startsWith("network:") || vips.has(p.id)) continue;
    const host = p["binding:host_id"] || "";
    g.add({
      id: p.id,
      kind: "port",
      name: label(p),
      sub: ips(p) || p.mac_address,
      status: p.admin_state_up ? p.status : "DOWN",
      host,
      route: "ports",
      info: { MAC: p.mac_address, Host: host || "unbound", "Admin state": p.admin_state_up ? "up" : "down" },
    });
    g.edge(p.network_id, p.id, "attach");
  }
}

function addFloatingIps(g, snap) {
  for (const f of snap.floatingips) {
    g.add({
      id: f.id,
      kind: "fip",
      name: f.floating_ip_address,
      sub: f.port_id ? `→ ${f.fixed_ip_address}` : "not associated",
      status: f.status,
      route: "floatingips",
      info: { "Fixed IP": f.fixed_ip_address || "—" },
    });
    g.edge(f.floating_network_id, f.id, "fip");
    if (f.port_id) g.edge(f.id, f.port_id, "nat");
  }
}

function addLoadBalancers(g, snap) {
  for (const lb of snap.loadbalancers) {
    g.add({
      id: lb.id,
      kind: "lb",
      name: label(lb),
      sub: `VIP ${lb.vip_address}`,
      status: lb.operating_status,
      route: "loadbalancers",
      info: { Provisioning: lb.provisioning_status, Listeners: lb.listeners.length },
    });
    g.edge(lb.vip_network_id, lb.id, "vip");
    const pools = snap.pools.filter((p) => (p.loadbalancers || []).some((r) => r.id === lb.id));
    for (const pool of pools) {
      for (const m of (snap.members || {})[pool.id] || []) {
        const port = memberPort(snap.ports, m);
        let target = port && g.has(port.id) ? port.id : null;
        if (!target) {
          target = g.add({
            id: m.id,
            kind: "member",
            name: `${m.address}:${m.protocol_port}`,
            sub: `member of ${label(pool)}`,
            status: m.operating_status,
            route: "loadbalancers",
            routeId: lb.id,
            info: { Weight: m.weight },
          }).id;
        }
        g.edge(lb.id, target, "member", `:${m.protocol_port}`, m.operating_status);
      }
    }
  }
}

function hostGroups(snap, nodes, now) {
  const status = snap.status || { hosts: [], compiled_generation: 0 };
  const groups = new Map();
  for (const host of status.hosts) {
    groups.set(host.host, { name: host.host, status: hostState(host, status, now), generation: host.installed_generation, reported_at: host.reported_at });
  }
  for (const node of nodes) {
    if (node.kind === "port" && node.host && !groups.has(node.host)) {
      groups.set(node.host, { name: node.host, status: "UNKNOWN", generation: null, reported_at: null });
    }
  }
  return [...groups.values()];
}

/** {nodes, edges, groups} of a snapshot (what the API showed this token). */
export function buildGraph(snap, { admin = false, now = Date.now() } = {}) {
  const nodes = [];
  const edges = [];
  const byId = new Map();
  const g = {
    add(node) {
      nodes.push(node);
      byId.set(node.id, node);
      return node;
    },
    has: (id) => byId.has(id),
    edge(from, to, kind, text = "", status = "") {
      edges.push({ from, to, kind, label: text, status });
    },
  };
  addNetworks(g, snap);
  addRouters(g, snap);
  addPorts(g, snap);
  addFloatingIps(g, snap);
  addLoadBalancers(g, snap);
  // An edge to something this token cannot see is not drawn.
  const visible = edges.filter((e) => byId.has(e.from) && byId.has(e.to));
  return { nodes, edges: visible, groups: admin ? hostGroups(snap, nodes, now) : [] };
}

function neighbours(graph) {
  const map = new Map(graph.nodes.map((n) => [n.id, []]));
  for (const e of graph.edges) {
    map.get(e.from).push(e.to);
    map.get(e.to).push(e.from);
  }
  return map;
}

const byName = (a, b) => a.name.localeCompare(b.name) || a.id.localeCompare(b.id);

/** Order nodes by the mean position of their neighbours already placed (barycenter). */
function orderBy(nodes, near, index) {
  const score = (node) => {
    const placed = near.get(node.id).filter((id) => index.has(id)).map((id) => index.get(id));
    return placed.length ? placed.reduce((a, b) => a + b, 0) / placed.length : Infinity;
  };
  const scored = nodes.map((node) => [score(node), node]);
  scored.sort((a, b) => a[0] - b[0] || byName(a[1], b[1]));
  return scored.map(([, node]) => node);
}

function indexOf(list) {
  return new Map(list.map((node, i) => [node.id, i]));
}

/** Group the bottom row by host (admins): [{group, nodes}] slots in order. */
function bottomSlots(bottom, groups, index) {
  if (!groups.length) return [{ group: null, nodes: bottom }];
  const slots = groups.map((group) => ({ group, nodes: bottom.filter((n) => n.host === group.name) }));
  const grouped = new Set(slots.flatMap((slot) => slot.nodes.map((n) => n.id)));
  const rest = bottom.filter((n) => !grouped.has(n.id));
  if (rest.length) slots.push({ group: null, nodes: rest });
  const mean = (slot) =>
    slot.nodes.length ? slot.nodes.reduce((a, n) => a + index.get(n.id), 0) / slot.nodes.length : Infinity;
  const key = (slot) => (slot.group ? slot.group.name : "");
  slots.sort((a, b) => mean(a) - mean(b) || key(a).localeCompare(key(b)));
  return slots;
}

function placeRow(slots, y, positions) {
  const { w, gapX, groupPad } = SIZE;
  let x = 0;
  let gap = 0;
  const boxes = [];
  for (const slot of slots) {
    if (!slot.nodes.length && !slot.group) continue;
    const count = Math.max(slot.nodes.length, slot.group ? 1 : 0);
    const pad = slot.group ? groupPad : 0;
    const start = x;
    x += pad;
    slot.nodes.forEach((node, i) => positions.set(node.id, { x: x + i * (w + gapX), y }));
    x += count * w + Math.max(0, count - 1) * gapX + pad;
    if (slot.group) boxes.push({ ...slot.group, x: start, width: x - start, empty: !slot.nodes.length });
    gap = slot.group ? gapX * 2 : gapX;
    x += gap;
  }
  return { width: Math.max(0, x - gap), boxes };
}

/** Positions of every node and host box; rows without nodes are left out. */
export function layout(graph) {
  const { h, gapY, pad, groupPad, groupLabel, arc } = SIZE;
  const near = neighbours(graph);
  const layers = [[], [], [], []];
  for (const node of graph.nodes) layers[LAYER[node.kind]].push(node);
  const routers = layers[1].filter((n) => n.kind === "router").sort(byName);
  const routerIndex = indexOf(routers);
  const networks = orderBy(layers[2], near, routerIndex);
  const externals = orderBy(layers[0], near, routerIndex);
  const bottom = orderBy(layers[3], near, indexOf(networks));
  const fips = orderBy(layers[1].filter((n) => n.kind === "fip"), near, indexOf(bottom));
  const slotsOf = [
    [{ group: null, nodes: externals }],
    [{ group: null, nodes: [...routers, ...fips] }],
    [{ group: null, nodes: networks }],
    bottomSlots(bottom, graph.groups, indexOf(bottom)),
  ];
  const positions = new Map();
  const rows = [];
  let y = pad;
  slotsOf.forEach((slots, layer) => {
    if (!slots.some((slot) => slot.nodes.length || slot.group)) return;
    const top = layer === 3 && graph.groups.length ? groupLabel + groupPad : 0;
    const row = placeRow(slots, y + top, positions);
    rows.push({ layer, y: y + top, ...row, nodes: slots.flatMap((s) => s.nodes) });
    y += top + h + gapY;
  });
  const width = Math.max(SIZE.w, ...rows.map((r) => r.width));
  const boxes = [];
  for (const row of rows) {
    const shift = pad + (width - row.width) / 2;
    for (const node of row.nodes) positions.get(node.id).x += shift;
    for (const box of row.boxes) {
      boxes.push({ ...box, x: box.x + shift, y: row.y - groupPad - groupLabel, height: h + 2 * groupPad + groupLabel });
    }
  }
  const hasArcs = graph.edges.some((e) => e.kind === "member");
  const height = (rows.length ? y - gapY : pad) + pad + (hasArcs ? arc + SIZE.arcLabel : 0) + (graph.groups.length ? groupPad : 0);
  return { width: width + 2 * pad, height, positions, boxes, rows: rows.map((r) => r.nodes.map((n) => n.id)) };
}
