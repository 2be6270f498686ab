// What each resource page shows and edits, as data: columns of the list,
// fields of the create/edit forms (with the checks worth doing before a
// round trip) and the extra sections of the detail page.

import { label, shortId, yesNo } from "./dom.js";
import {
  cidrError,
  formatPools,
  formatRoutes,
  intIn,
  ipError,
  ipInCIDR,
  macError,
  parseAddressList,
  parseCIDR,
  parsePools,
  parseRoutes,
} from "./validate.js";
import { lbSections, networkSections, qosSections, routerSections, sgSections } from "./details.js";

export const byId = (items, id) => (items || []).find((item) => item.id === id);
const named = (items, id) => (id ? label(byId(items, id)) || shortId(id) : "—");
const options = (items, fmt = label) => (items || []).map((i) => ({ value: i.id, label: fmt(i) }));
const external = (data) => (data.networks || []).filter((n) => n["router:external"]);
export const isServicePort = (port, data) =>
  port.device_owner.startsWith("network:") ||
  (data.loadbalancers || []).some((lb) => lb.vip_port_id === port.id);
export const subnetLabel = (subnet) => `${label(subnet)} (${subnet.cidr})`;
export const ips = (port) => port.fixed_ips.map((ip) => ip.ip_address).join(", ");

const name = { name: "name", label: "Name", type: "text", placeholder: "e.g. web" };
const description = { name: "description", label: "Description", type: "text", advanced: true };
const adminUp = { name: "admin_state_up", label: "Administratively up", type: "checkbox", initial: true, advanced: true };

/** A textarea field whose text is parsed into a list (routes, pools, DNS). */
function listField(key, labelText, parser, format, extra = {}) {
  return {
    name: key,
    label: labelText,
    type: "textarea",
    check: (value) => parser(value).error || null,
    get: (item) => format(item[key]),
    put: (value, body, values, mode) => {
      const list = parser(value).value;
      if (list.length || mode === "edit") body[key] = list;
    },
    ...extra,
  };
}

function qosField() {
  return {
    advanced: true,
    name: "qos_policy_id",
    label: "QoS policy",
    type: "select",
    nullable: true,
    emptyLabel: "none",
    options: (d) => options(d.qos_policies),
  };
}

const networks = {
  key: "networks",
  title: "Networks",
  singular: "network",
  source: "networks",
  path: "/v2.0/networks",
  member: "network",
  needs: ["subnets", "ports", "qos_policies"],
  columns: [
    { label: "Name", value: (n) => label(n), link: true },
    {
      label: "Subnets",
      value: (n, d) => (d.subnets || []).filter((s) => s.network_id === n.id).map((s) => s.cidr).join(", ") || "—",
    },
    { label: "Status", value: (n) => n.status, status: true },
    { label: "External", value: (n) => yesNo(n["router:external"]) },
    { label: "Shared", value: (n) => yesNo(n.shared) },
    { label: "MTU", value: (n) => n.mtu },
  ],
  fields: [
    name,
    description,
    adminUp,
    { advanced: true, name: "mtu", label: "MTU", type: "number", check: intIn(68, 9000), help: "Empty: 1442 (fits Geneve and VXLAN)." },
    { advanced: true, name: "port_security_enabled", label: "Port security", type: "checkbox", initial: true },
    qosField(),
    { name: "shared", label: "Shared with every project", type: "checkbox", admin: true },
    {
      name: "router:external",
      label: "External (router gateways, floating IPs)",
      type: "checkbox",
      admin: true,
    },
  ],
  detail: networkSections,
};

function gatewayCheck(value, values) {
  const bad = ipError(value);
  if (bad) return bad;
  if (values.cidr && !cidrError(values.cidr) && !ipInCIDR(value, values.cidr)) {
    return `Gateway ${value} is not in ${values.cidr}.`;
  }
  return null;
}

const subnets = {
  key: "subnets",
  title: "Subnets",
  singular: "subnet",
  source: "subnets",
  path: "/v2.0/subnets",
  member: "subnet",
  needs: ["networks"],
  columns: [
    { label: "Name", value: (s) => label(s), link: true },
    { label: "Network", value: (s, d) => named(d.networks, s.network_id) },
    { label: "CIDR", value: (s) => s.cidr },
    { label: "Gateway", value: (s) => s.gateway_ip || "none" },
    { label: "DHCP", value: (s) => yesNo(s.enable_dhcp) },
    { label: "Pools", value: (s) => formatPools(s.allocation_pools).replaceAll("\n", ", ") },
  ],
  fields: [
    {
      name: "network_id",
      label: "Network",
      type: "select",
      required: true,
      on: "create",
      options: (d) => options(d.networks),
    },
    { ...name, placeholder: "e.g. web-v4" },
    {
      name: "cidr",
      label: "CIDR",
      type: "text",
      required: true,
      on: "create",
      placeholder: "10.0.0.0/24",
      check: (value, values) => {
        const bad = cidrError(value);
        if (bad) return bad;
        const version = parseCIDR(value).version;
        return String(version) === values.ip_version ? null : `${value} is an IPv${version} CIDR but IP version is ${values.ip_version}.`;
      },
    },
    {
      name: "ip_version",
      label: "IP version",
      type: "select",
      required: true,
      on: "create",
      initial: "4",
      options: () => [
        { value: "4", label: "IPv4" },
        { value: "6", label: "IPv6" },
      ],
      put: (value, body) => {
        body.ip_version = Number(value);
      },
    },
    {
      name: "gateway_ip",
      label: "Gateway IP",
      type: "text",
      help: "Empty: the first address of the CIDR.",
      check: gatewayCheck,
      put: (value, body, values) => {
        if (values.no_gateway) body.gateway_ip = null;
        else if (value) body.gateway_ip = value;
      },
    },
    {
      name: "no_gateway",
      label: "No gateway",
      type: "checkbox",
      get: (s) => !s.gateway_ip,
      put: (value, body, values) => {
        if (value) body.gateway_ip = null;
        else if (values.gateway_ip) body.gateway_ip = values.gateway_ip;
      },
    },
    { name: "enable_dhcp", label: "DHCP", type: "checkbox", initial: true },
    listField("dns_nameservers", "DNS servers", parseAddressList, (v) => (v || []).join(", "), {
      advanced: true,
      type: "text",
      placeholder: "8.8.8.8, 1.1.1.1",
    }),
    listField("allocation_pools", "Allocation pools", parsePools, formatPools, {
      advanced: true,
      help: "One range per line: first-last. Empty: the whole CIDR but the gateway.",
      placeholder: "10.0.0.10-10.0.0.200",
    }),
    listField("host_routes", "Host routes", parseRoutes, formatRoutes, {
      advanced: true,
      help: "One per line: destination via nexthop.",
      placeholder: "192.168.0.0/16 via 10.0.0.254",
    }),
    { ...description },
  ],
};

function fixedIpCheck(value, values, data) {
  const bad = ipError(value);
  if (bad) return bad;
  const subnet = byId(data.subnets, values.subnet_id);
  if (subnet && !ipInCIDR(value, subnet.cidr)) return `${value} is not in ${subnet.cidr}.`;
  return null;
}

function subnetOfNetwork(value, values, data) {
  const subnet = byId(data.subnets, value);
  if (subnet && values.network_id && subnet.network_id !== values.network_id) {
    return `${subnetLabel(subnet)} is not on the chosen network.`;
  }
  return null;
}

const ports = {
  key: "ports",
  title: "Ports",
  singular: "port",
  source: "ports",
  path: "/v2.0/ports",
  member: "port",
  needs: ["networks", "subnets", "security_groups", "qos_policies", "loadbalancers"],
  serviceFilter: true,
  columns: [
    { label: "Name", value: (p) => label(p), link: true },
    { label: "Network", value: (p, d) => named(d.networks, p.network_id) },
    { label: "Fixed IPs", value: (p) => ips(p) || "—" },
    { label: "MAC", value: (p) => p.mac_address },
    { label: "Status", value: (p) => p.status, status: true },
    { label: "Host", value: (p) => p["binding:host_id"] || "—" },
    { label: "Owner", value: (p) => p.device_owner || "—" },
  ],
  fields: [
    {
      name: "network_id",
      label: "Network",
      type: "select",
      required: true,
      on: "create",
      options: (d) => options(d.networks),
    },
    { ...name, placeholder: "e.g. vm1" },
    {
      name: "subnet_id",
      label: "Subnet",
      type: "select",
      on: "create",
      emptyLabel: "any subnet of the network",
      options: (d) => options(d.subnets, subnetLabel),
      check: subnetOfNetwork,
      put: () => {},
    },
    {
      name: "ip_address",
      label: "Fixed IP",
      type: "text",
      on: "create",
      help: "Empty: the next free address.",
      check: fixedIpCheck,
      put: (value, body, values) => {
        if (!value && !values.subnet_id) return;
        const ip = {};
        if (values.subnet_id) ip.subnet_id = values.subnet_id;
        if (value) ip.ip_address = value;
        body.fixed_ips = [ip];
      },
    },
    { advanced: true, name: "mac_address", label: "MAC address", type: "text", on: "create", check: macError, help: "Empty: generated." },
    {
      name: "security_groups",
      label: "Security groups",
      type: "checks",
      help: "None ticked on create: the project's default group.",
      options: (d) => options(d.security_groups),
      put: (value, body, values, mode) => {
        if (value.length || mode === "edit") body.security_groups = value;
      },
    },
    { advanced: true, name: "port_security_enabled", label: "Port security", type: "checkbox", initial: true },
    adminUp,
    qosField(),
    { advanced: true, name: "binding:host_id", label: "Host (binding)", type: "text", admin: true },
    { ...description },
  ],
};

const routers = {
  key: "routers",
  title: "Routers",
  singular: "router",
  source: "routers",
  path: "/v2.0/routers",
  member: "router",
  needs: ["networks", "subnets", "ports"],
  columns: [
    { label: "Name", value: (r) => label(r), link: true },
    {
      label: "External gateway",
      value: (r, d) => {
        const gw = r.external_gateway_info;
        if (!gw || !gw.network_id) return "—";
        const addr = (gw.external_fixed_ips || []).map((ip) => ip.ip_address).join(", ");
        return `${named(d.networks, gw.network_id)} ${addr}`.trim();
      },
    },
    {
      label: "Interfaces",
      value: (r, d) =>
        (d.ports || [])
          .filter((p) => p.device_id === r.id && p.device_owner === "network:router_interface")
          .map(ips)
          .join(", ") || "—",
    },
    { label: "Routes", value: (r) => r.routes.length },
    { label: "Status", value: (r) => r.status, status: true },
  ],
  fields: [
    { ...name, placeholder: "e.g. r1" },
    description,
    adminUp,
    {
      name: "gateway_network",
      label: "External network (gateway)",
      type: "select",
      emptyLabel: "no gateway",
      options: (d) => options(external(d)),
      get: (r) => r.external_gateway_info?.network_id || "",
      put: (value, body, values, mode) => {
        if (value) body.external_gateway_info = { network_id: value, enable_snat: values.enable_snat };
        else if (mode === "edit") body.external_gateway_info = {};
      },
    },
    {
      name: "enable_snat",
      label: "SNAT for VMs without a floating IP",
      type: "checkbox",
      initial: true,
      get: (r) => r.external_gateway_info?.enable_snat ?? true,
      put: (value, body, values) => {
        if (values.gateway_network) {
          body.external_gateway_info = { network_id: values.gateway_network, enable_snat: value };
        }
      },
    },
    listField("routes", "Extra routes", parseRoutes, formatRoutes, {
      on: "edit",
      help: "One per line: destination via nexthop (the nexthop must be on an interface's subnet).",
      placeholder: "192.168.0.0/16 via 10.0.0.254",
    }),
  ],
  detail: routerSections,
};

const securityGroups = {
  key: "security-groups",
  title: "Security groups",
  singular: "security group",
  source: "security_groups",
  path: "/v2.0/security-groups",
  member: "security_group",
  needs: [],
  columns: [
    { label: "Name", value: (g) => label(g), link: true },
    { label: "Description", value: (g) => g.description || "—" },
    { label: "Rules", value: (g) => (g.security_group_rules || []).length },
    { label: "Stateful", value: (g) => yesNo(g.stateful) },
  ],
  fields: [
    { ...name, placeholder: "e.g. web" },
    description,
    { name: "stateful", label: "Stateful (return traffic allowed)", type: "checkbox", initial: true },
  ],
  detail: sgSections,
};

const floatingips = {
  key: "floatingips",
  title: "Floating IPs",
  singular: "floating IP",
  source: "floatingips",
  path: "/v2.0/floatingips",
  member: "floatingip",
  needs: ["networks", "ports", "routers", "loadbalancers"],
  display: (f) => f.floating_ip_address,
  columns: [
    { label: "Address", value: (f) => f.floating_ip_address, link: true },
    { label: "Network", value: (f, d) => named(d.networks, f.floating_network_id) },
    { label: "Port", value: (f, d) => (f.port_id ? named(d.ports, f.port_id) : "not associated") },
    { label: "Fixed IP", value: (f) => f.fixed_ip_address || "—" },
    { label: "Router", value: (f, d) => (f.router_id ? named(d.routers, f.router_id) : "—") },
    { label: "Status", value: (f) => f.status, status: true },
  ],
  fields: [
    {
      name: "floating_network_id",
      label: "External network",
      type: "select",
      required: true,
      on: "create",
      options: (d) => options(external(d)),
    },
    { name: "floating_ip_address", label: "Address", type: "text", on: "create", check: ipError, help: "Empty: the next free address." },
    {
      name: "port_id",
      label: "Port",
      type: "select",
      nullable: true,
      emptyLabel: "not associated",
      options: (d) =>
        options(
          (d.ports || []).filter((p) => !isServicePort(p, d)),
          (p) => `${label(p)} (${ips(p)})`,
        ),
    },
    description,
  ],
};

const qos = {
  key: "qos",
  title: "QoS policies",
  singular: "QoS policy",
  source: "qos_policies",
  path: "/v2.0/qos/policies",
  member: "policy",
  needs: [],
  columns: [
    { label: "Name", value: (q) => label(q), link: true },
    { label: "Description", value: (q) => q.description || "—" },
    { label: "Rules", value: (q) => (q.rules || []).map((r) => r.type).join(", ") || "—" },
    { label: "Shared", value: (q) => yesNo(q.shared) },
    { label: "Default", value: (q) => yesNo(q.is_default) },
  ],
  fields: [
    { ...name, placeholder: "e.g. gold" },
    description,
    { name: "is_default", label: "Default policy of the project", type: "checkbox" },
    { name: "shared", label: "Shared with every project", type: "checkbox", admin: true },
  ],
  detail: qosSections,
};

const loadbalancers = {
  key: "loadbalancers",
  title: "Load balancers",
  singular: "load balancer",
  source: "loadbalancers",
  path: "/v2/lbaas/loadbalancers",
  member: "loadbalancer",
  deleteQuery: "?cascade=true",
  deleteText: "Its listeners, pools, members and health monitors are deleted with it.",
  needs: ["networks", "subnets"],
  columns: [
    { label: "Name", value: (l) => label(l), link: true },
    { label: "VIP", value: (l) => l.vip_address },
    { label: "Network", value: (l, d) => named(d.networks, l.vip_network_id) },
    { label: "Listeners", value: (l) => l.listeners.length },
    { label: "Pools", value: (l) => l.pools.length },
    { label: "Provisioning", value: (l) => l.provisioning_status },
    { label: "Operating", value: (l) => l.operating_status, status: true },
  ],
  fields: [
    { ...name, placeholder: "e.g. web-lb" },
    description,
    {
      name: "vip_subnet_id",
      label: "VIP subnet",
      type: "select",
      required: true,
      on: "create",
      options: (d) => options(d.subnets, subnetLabel),
    },
    {
      name: "vip_address",
      label: "VIP address",
      type: "text",
      on: "create",
      help: "Empty: the next free address of the subnet.",
      check: ipError,
    },
    adminUp,
  ],
  detail: lbSections,
};

export const SPECS = [networks, subnets, ports, routers, securityGroups, floatingips, qos, loadbalancers];
export const SPEC_BY_KEY = Object.fromEntries(SPECS.map((spec) => [spec.key, spec]));

/** Where the detail page of an object of an NB kind (as in trace provenance) lives. */
export const KIND_ROUTES = {
  network: "networks",
  subnet: "subnets",
  port: "ports",
  router: "routers",
  security_group: "security-groups",
  floatingip: "floatingips",
  qos_policy: "qos",
  loadbalancer: "loadbalancers",
};
