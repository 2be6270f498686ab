// Sections of detail pages for what lives inside a resource: router
// interfaces and routes, security group rules, QoS rules, and a load
// balancer's listeners, pools, members and health monitors.

import { del, get, put, post } from "./api.js";
import { announce, h, label, shortId } from "./dom.js";
import { confirmAction, initialValues, openForm } from "./forms.js";
import {
  cidrError,
  intIn,
  ipError,
  ipInCIDR,
  ipOrCidrError,
  protocolError,
} from "./validate.js";

const byId = (items, id) => (items || []).find((item) => item.id === id);
const named = (items, id) => (id ? label(byId(items, id)) || shortId(id) : "—");
const choices = (values) => values.map((v) => ({ value: String(v), label: String(v) }));
const subnetLabel = (s) => `${label(s)} (${s.cidr})`;
const link = (route, item) => h("a", { href: `#/${route}/${item.id}` }, label(item));

/** One sub-collection: a table with delete buttons and an "Add" form. */
export function subTable({ title, items, columns, rowName, remove, add, ctx, empty }) {
  const section = h("section", { class: "sub", "aria-label": title }, h("h2", {}, title));
  if (add) {
    const open = async () => {
      const fields = add.fields;
      const ok = await openForm({
        title: add.title,
        fields,
        values: initialValues(fields),
        data: ctx.data,
        submitLabel: add.submitLabel || "Add",
        submit: add.submit,
      });
      if (ok) {
        announce(`${add.title}: done.`);
        await ctx.refresh();
      }
    };
    section.append(h("p", {}, h("button", { type: "button", class: "primary", onclick: open }, add.title)));
  }
  if (!items.length) {
    section.append(h("p", { class: "empty" }, empty || "None."));
    return section;
  }
  const head = h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c.label)), remove ? h("th", { scope: "col" }, h("span", { class: "sr-only" }, "Actions")) : null);
  const rows = items.map((item) =>
    h(
      "tr",
      { "data-name": rowName(item) },
      columns.map((c) => h("td", {}, c.value(item))),
      remove
        ? h("td", {}, h("button", {
            type: "button",
            class: "danger small",
            "aria-label": `Delete ${rowName(item)}`,
            onclick: async () => {
              const ok = await confirmAction({
                title: `Delete ${rowName(item)}?`,
                confirmLabel: "Delete",
                action: () => remove(item),
              });
              if (ok) {
                announce(`Deleted ${rowName(item)}.`);
                await ctx.refresh();
              }
            },
          }, "Delete"))
        : null,
    ),
  );
  section.append(h("div", { class: "table-wrap" }, h("table", {}, h("thead", {}, head), h("tbody", {}, rows))));
  return section;
}

export function networkSections(net, data) {
  const subnets = (data.subnets || []).filter((s) => s.network_id === net.id);
  const ports = (data.ports || []).filter((p) => p.network_id === net.id);
  const list = (title, route, items, text) =>
    h("section", { class: "sub", "aria-label": title }, h("h2", {}, title),
      items.length ? h("ul", {}, items.map((i) => h("li", {}, link(route, i), " ", text(i)))) : h("p", { class: "empty" }, "None."));
  return [
    list("Subnets", "subnets", subnets, (s) => s.cidr),
    list("Ports", "ports", ports, (p) => `${p.fixed_ips.map((i) => i.ip_address).join(", ")} ${p.device_owner}`),
  ];
}

export function routerSections(router, data, ctx) {
  const base = `/v2.0/routers/${router.id}`;
  const ifaces = (data.ports || []).filter(
    (p) => p.device_id === router.id && p.device_owner === "network:router_interface",
  );
  const attached = new Set(ifaces.flatMap((p) => p.fixed_ips.map((i) => i.subnet_id)));
  const externals = new Set((data.networks || []).filter((n) => n["router:external"]).map((n) => n.id));
  const candidates = (data.subnets || []).filter((s) => !attached.has(s.id) && !externals.has(s.network_id));
  const subnetOf = (p) => byId(data.subnets, p.fixed_ips[0]?.subnet_id);
  const interfaces = subTable({
    title: "Interfaces",
    ctx,
    items: ifaces,
    empty: "No interface: attach a subnet to route it.",
    rowName: (p) => `interface ${p.fixed_ips.map((i) => i.ip_address).join(", ")}`,
    columns: [
      { label: "Subnet", value: (p) => (subnetOf(p) ? subnetLabel(subnetOf(p)) : "—") },
      { label: "Address", value: (p) => p.fixed_ips.map((i) => i.ip_address).join(", ") },
      { label: "Network", value: (p) => named(data.networks, p.network_id) },
      { label: "Port", value: (p) => h("a", { href: `#/ports/${p.id}` }, shortId(p.id)) },
    ],
    remove: (p) => put(`${base}/remove_router_interface`, { port_id: p.id }),
    add: {
      title: "Add interface",
      fields: [{
        name: "subnet_id",
        label: "Subnet",
        type: "select",
        required: true,
        options: () => candidates.map((s) => ({ value: s.id, label: `${subnetLabel(s)} on ${named(data.networks, s.network_id)}` })),
      }],
      submit: (values) => put(`${base}/add_router_interface`, { subnet_id: values.subnet_id }),
    },
  });
  const routes = subTable({
    title: "Extra routes",
    ctx,
    items: router.routes,
    rowName: (r) => `route ${r.destination} via ${r.nexthop}`,
    columns: [
      { label: "Destination", value: (r) => r.destination },
      { label: "Next hop", value: (r) => r.nexthop },
    ],
    remove: (r) => put(base, { router: { routes: router.routes.filter((x) => x !== r) } }),
    add: {
      title: "Add route",
      fields: [
        { name: "destination", label: "Destination", type: "text", required: true, check: cidrError, placeholder: "192.168.0.0/16" },
        { name: "nexthop", label: "Next hop", type: "text", required: true, check: ipError, placeholder: "10.0.0.254" },
      ],
      submit: (v) => put(base, { router: { routes: [...router.routes, { destination: v.destination, nexthop: v.nexthop }] } }),
    },
  });
  return [interfaces, routes];
}

function portRange(rule) {
  if (rule.port_range_min === null && rule.port_range_max === null) return "any";
  if (rule.port_range_min === rule.port_range_max) return String(rule.port_range_min);
  return `${rule.port_range_min ?? ""}-${rule.port_range_max ?? ""}`;
}

const ruleFields = (data) => [
  { name: "direction", label: "Direction", type: "select", required: true, initial: "ingress", options: () => choices(["ingress", "egress"]) },
  { name: "ethertype", label: "Ether type", type: "select", required: true, initial: "IPv4", options: () => choices(["IPv4", "IPv6"]) },
  { name: "protocol", label: "Protocol", type: "text", placeholder: "tcp, udp, icmp, 47… (empty: any)", check: protocolError },
  { name: "port_range_min", label: "Port from", type: "number", check: intIn(0, 65535), help: "For ICMP: the type." },
  {
    name: "port_range_max",
    label: "Port to",
    type: "number",
    help: "For ICMP: the code. Empty: same as \"from\".",
    check: (value, values) => intIn(0, 65535)(value) || (values.port_range_min !== "" && Number(value) < Number(values.port_range_min) ? "\"Port to\" is lower than \"Port from\"." : null),
  },
  { name: "remote_ip_prefix", label: "Remote IP prefix", type: "text", placeholder: "0.0.0.0/0", check: ipOrCidrError },
  {
    name: "remote_group_id",
    label: "Remote group",
    type: "select",
    emptyLabel: "none",
    options: () => (data.security_groups || []).map((g) => ({ value: g.id, label: label(g) })),
    check: (value, values) => (values.remote_ip_prefix ? "Give a remote IP prefix or a remote group, not both." : null),
  },
  { name: "description", label: "Description", type: "text" },
];

export function sgSections(group, data, ctx) {
  const rules = group.security_group_rules || [];
  return [subTable({
    title: "Rules",
    ctx,
    items: rules,
    empty: "No rule: nothing is allowed.",
    rowName: (r) => `rule ${r.direction} ${r.ethertype} ${r.protocol || "any"} ${portRange(r)} ${r.remote_ip_prefix || named(data.security_groups, r.remote_group_id)}`,
    columns: [
      { label: "Direction", value: (r) => r.direction },
      { label: "Ether type", value: (r) => r.ethertype },
      { label: "Protocol", value: (r) => r.protocol || "any" },
      { label: "Ports", value: portRange },
      { label: "Remote", value: (r) => r.remote_ip_prefix || (r.remote_group_id ? `group ${named(data.security_groups, r.remote_group_id)}` : "any") },
    ],
    remove: (r) => del(`/v2.0/security-group-rules/${r.id}`),
    add: {
      title: "Add rule",
      fields: ruleFields(data),
      submit: (v) => {
        const rule = { security_group_id: group.id, direction: v.direction, ethertype: v.ethertype };
        if (v.protocol) rule.protocol = v.protocol.trim().toLowerCase();
        if (v.port_range_min !== "") rule.port_range_min = Number(v.port_range_min);
        if (v.port_range_max !== "") rule.port_range_max = Number(v.port_range_max);
        else if (v.port_range_min !== "") rule.port_range_max = Number(v.port_range_min);
        if (v.remote_ip_prefix) rule.remote_ip_prefix = v.remote_ip_prefix.trim();
        if (v.remote_group_id) rule.remote_group_id = v.remote_group_id;
        if (v.description) rule.description = v.description;
        return post("/v2.0/security-group-rules", { security_group_rule: rule });
      },
    },
  })];
}

const DSCP = [0, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32, 34, 36, 38, 40, 46, 48, 56];

export function qosSections(policy, data, ctx) {
  const base = `/v2.0/qos/policies/${policy.id}`;
  const rules = policy.rules || [];
  const describe = (r) =>
    r.type === "bandwidth_limit"
      ? `${r.direction} ${r.max_kbps} kbit/s (burst ${r.max_burst_kbps})`
      : `DSCP ${r.dscp_mark}`;
  const section = (type, title, fields, toBody) =>
    subTable({
      title,
      ctx,
      items: rules.filter((r) => r.type === type),
      rowName: (r) => `${type.replace("_", " ")} rule ${describe(r)}`,
      columns: [{ label: "Rule", value: describe }],
      remove: (r) => del(`${base}/${type}_rules/${r.id}`),
      add: {
        title: `Add ${title.toLowerCase().replace(/s$/, "")}`,
        fields,
        submit: (v) => post(`${base}/${type}_rules`, { [`${type}_rule`]: toBody(v) }),
      },
    });
  return [
    section(
      "bandwidth_limit",
      "Bandwidth limits",
      [
        { name: "max_kbps", label: "Max kbit/s", type: "number", required: true, check: intIn(0, 2147483647) },
        { name: "max_burst_kbps", label: "Burst kbit", type: "number", check: intIn(0, 2147483647) },
        { name: "direction", label: "Direction", type: "select", required: true, initial: "egress", options: () => choices(["egress", "ingress"]) },
      ],
      (v) => ({
        max_kbps: Number(v.max_kbps),
        ...(v.max_burst_kbps !== "" ? { max_burst_kbps: Number(v.max_burst_kbps) } : {}),
        direction: v.direction,
      }),
    ),
    section(
      "dscp_marking",
      "DSCP markings",
      [{ name: "dscp_mark", label: "DSCP mark", type: "select", required: true, options: () => choices(DSCP) }],
      (v) => ({ dscp_mark: Number(v.dscp_mark) }),
    ),
  ];
}

async function lbChildren(lb) {
  const belongs = (refs) => (refs || []).some((r) => r.id === lb.id);
  const [listeners, pools, monitors, status] = await Promise.all([
    get("/v2/lbaas/listeners").then((d) => d.listeners.filter((l) => belongs(l.loadbalancers))),
    get("/v2/lbaas/pools").then((d) => d.pools.filter((p) => belongs(p.loadbalancers))),
    get("/v2/lbaas/healthmonitors").then((d) => d.healthmonitors),
    get(`/v2/lbaas/loadbalancers/${lb.id}/status`).then((d) => d.statuses),
  ]);
  const poolIds = new Set(pools.map((p) => p.id));
  const members = {};
  await Promise.all(pools.map(async (p) => {
    members[p.id] = (await get(`/v2/lbaas/pools/${p.id}/members`)).members;
  }));
  return {
    listeners,
    pools,
    members,
    status,
    monitors: monitors.filter((m) => (m.pools || []).some((r) => poolIds.has(r.id))),
  };
}

function statusTree(status) {
  const badge = (s) => h("span", { class: `badge st-${String(s).toLowerCase()}` }, s);
  const lb = status.loadbalancer;
  const member = (m) => h("li", {}, `member ${m.address}:${m.protocol_port} `, badge(m.operating_status));
  const pool = (p) =>
    h("li", {}, `pool ${p.name || shortId(p.id)} `, badge(p.operating_status), h("ul", {}, (p.members || []).map(member)));
  const listener = (l) =>
    h("li", {}, `listener ${l.name || shortId(l.id)} `, badge(l.operating_status), h("ul", {}, (l.pools || []).map(pool)));
  return h("section", { class: "sub", "aria-label": "Status" }, h("h2", {}, "Status"),
    h("p", {}, "Load balancer ", badge(lb.operating_status), " provisioning ", lb.provisioning_status),
    h("ul", { class: "tree" }, (lb.listeners || []).map(listener)));
}

const PROTOCOLS = choices(["TCP", "UDP", "HTTP"]);

export async function lbSections(lb, data, ctx) {
  const kids = await lbChildren(lb);
  const vipSubnets = (data.subnets || []);
  const poolOptions = () => kids.pools.map((p) => ({ value: p.id, label: label(p) }));
  const sections = [statusTree(kids.status)];
  sections.push(subTable({
    title: "Listeners", ctx, items: kids.listeners,
    rowName: (l) => `listener ${label(l)}`,
    columns: [
      { label: "Name", value: label },
      { label: "Protocol", value: (l) => `${l.protocol} ${l.protocol_port}` },
      { label: "Default pool", value: (l) => named(kids.pools, l.default_pool_id) },
      { label: "Status", value: (l) => l.operating_status },
    ],
    remove: (l) => del(`/v2/lbaas/listeners/${l.id}`),
    add: {
      title: "Add listener",
      fields: [
        { name: "name", label: "Name", type: "text" },
        { name: "protocol", label: "Protocol", type: "select", required: true, initial: "TCP", options: () => PROTOCOLS },
        { name: "protocol_port", label: "Port", type: "number", required: true, check: intIn(1, 65535) },
        { name: "default_pool_id", label: "Default pool", type: "select", emptyLabel: "none", options: poolOptions },
      ],
      submit: (v) => post("/v2/lbaas/listeners", { listener: {
        loadbalancer_id: lb.id, name: v.name, protocol: v.protocol, protocol_port: Number(v.protocol_port),
        ...(v.default_pool_id ? { default_pool_id: v.default_pool_id } : {}),
      } }),
    },
  }));
  sections.push(subTable({
    title: "Pools", ctx, items: kids.pools,
    rowName: (p) => `pool ${label(p)}`,
    columns: [
      { label: "Name", value: label },
      { label: "Protocol", value: (p) => p.protocol },
      { label: "Algorithm", value: (p) => p.lb_algorithm },
      { label: "Members", value: (p) => (kids.members[p.id] || []).length },
      { label: "Status", value: (p) => p.operating_status },
    ],
    remove: (p) => del(`/v2/lbaas/pools/${p.id}`),
    add: {
      title: "Add pool",
      fields: [
        { name: "name", label: "Name", type: "text" },
        { name: "protocol", label: "Protocol", type: "select", required: true, initial: "TCP", options: () => PROTOCOLS },
        { name: "lb_algorithm", label: "Algorithm", type: "select", required: true, initial: "ROUND_ROBIN", options: () => choices(["ROUND_ROBIN", "SOURCE_IP", "LEAST_CONNECTIONS"]) },
        { name: "listener_id", label: "Listener", type: "select", emptyLabel: "none (attach later)", options: () => kids.listeners.map((l) => ({ value: l.id, label: label(l) })) },
      ],
      submit: (v) => post("/v2/lbaas/pools", { pool: {
        name: v.name, protocol: v.protocol, lb_algorithm: v.lb_algorithm,
        ...(v.listener_id ? { listener_id: v.listener_id } : { loadbalancer_id: lb.id }),
      } }),
    },
  }));
  for (const pool of kids.pools) {
    sections.push(subTable({
      title: `Members of pool ${label(pool)}`, ctx, items: kids.members[pool.id] || [],
      rowName: (m) => `member ${m.address}:${m.protocol_port}`,
      columns: [
        { label: "Address", value: (m) => `${m.address}:${m.protocol_port}` },
        { label: "Weight", value: (m) => `${m.weight}${m.backup ? " (backup)" : ""}` },
        { label: "Status", value: (m) => h("span", { class: `badge st-${m.operating_status.toLowerCase()}` }, m.operating_status) },
      ],
      remove: (m) => del(`/v2/lbaas/pools/${pool.id}/members/${m.id}`),
      add: {
        title: `Add member to ${label(pool)}`,
        fields: [
          { name: "address", label: "Address", type: "text", required: true, check: ipError },
          { name: "protocol_port", label: "Port", type: "number", required: true, check: intIn(1, 65535) },
          {
            name: "subnet_id", label: "Subnet", type: "select", emptyLabel: "the VIP subnet",
            options: () => vipSubnets.map((s) => ({ value: s.id, label: subnetLabel(s) })),
            check: (value, values) => {
              const subnet = byId(vipSubnets, value);
              return subnet && values.address && !ipInCIDR(values.address, subnet.cidr) ? `${values.address} is not in ${subnet.cidr}.` : null;
            },
          },
          { name: "weight", label: "Weight", type: "number", initial: "1", check: intIn(0, 256) },
          { name: "backup", label: "Backup member", type: "checkbox" },
        ],
        submit: (v) => post(`/v2/lbaas/pools/${pool.id}/members`, { member: {
          address: v.address, protocol_port: Number(v.protocol_port), backup: v.backup,
          ...(v.weight !== "" ? { weight: Number(v.weight) } : {}),
          ...(v.subnet_id ? { subnet_id: v.subnet_id } : {}),
        } }),
      },
    }));
  }
  sections.push(subTable({
    title: "Health monitors", ctx, items: kids.monitors,
    rowName: (m) => `health monitor ${m.type} on ${named(kids.pools, m.pools[0]?.id)}`,
    columns: [
      { label: "Pool", value: (m) => named(kids.pools, m.pools[0]?.id) },
      { label: "Type", value: (m) => m.type },
      { label: "Delay / timeout", value: (m) => `${m.delay} s / ${m.timeout} s` },
      { label: "Retries", value: (m) => `${m.max_retries} up, ${m.max_retries_down} down` },
    ],
    remove: (m) => del(`/v2/lbaas/healthmonitors/${m.id}`),
    add: {
      title: "Add health monitor",
      fields: [
        { name: "pool_id", label: "Pool", type: "select", required: true, options: poolOptions },
        { name: "type", label: "Type", type: "select", required: true, initial: "TCP", options: () => choices(["PING", "TCP", "HTTP"]) },
        { name: "delay", label: "Delay (s)", type: "number", required: true, initial: "5", check: intIn(1, 2147483647) },
        { name: "timeout", label: "Timeout (s)", type: "number", required: true, initial: "3", check: intIn(1, 2147483647) },
        { name: "max_retries", label: "Retries before up", type: "number", required: true, initial: "3", check: intIn(1, 10) },
      ],
      submit: (v) => post("/v2/lbaas/healthmonitors", { healthmonitor: {
        pool_id: v.pool_id, type: v.type, delay: Number(v.delay), timeout: Number(v.timeout), max_retries: Number(v.max_retries),
      } }),
    },
  }));
  return sections;
}

