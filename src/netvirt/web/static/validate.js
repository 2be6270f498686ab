// Client-side checks for the obvious mistakes, worded like the API's own
// messages. The API stays the authority: whatever passes here and is still
// wrong comes back as a NeutronError, shown verbatim.

export function parseIPv4(text) {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(text);
  if (!m) return null;
  let value = 0n;
  for (let i = 1; i <= 4; i += 1) {
    if ((m[i].length > 1 && m[i][0] === "0") || Number(m[i]) > 255) return null;
    value = (value << 8n) | BigInt(Number(m[i]));
  }
  return value;
}

function expandV4Tail(groups) {
  if (!groups.length || !groups[groups.length - 1].includes(".")) return groups;
  const v4 = parseIPv4(groups[groups.length - 1]);
  if (v4 === null) return null;
  return [...groups.slice(0, -1), (v4 >> 16n).toString(16), (v4 & 0xffffn).toString(16)];
}

export function parseIPv6(text) {
  if (!/^[0-9a-fA-F:.]+$/.test(text)) return null;
  const parts = text.split("::");
  if (parts.length > 2) return null;
  const split = (part) => (part === "" ? [] : part.split(":"));
  let head = split(parts[0]);
  let tail = parts.length === 2 ? split(parts[1]) : [];
  if (parts.length === 2) tail = expandV4Tail(tail);
  else head = expandV4Tail(head);
  if (head === null || tail === null) return null;
  const all = [...head, ...tail];
  if (all.some((g) => !/^[0-9a-fA-F]{1,4}$/.test(g))) return null;
  const missing = 8 - all.length;
  if (parts.length === 2 ? missing < 1 : missing !== 0) return null;
  const zeros = Array(parts.length === 2 ? missing : 0).fill("0");
  return [...head, ...zeros, ...tail].reduce((acc, g) => (acc << 16n) | BigInt(parseInt(g, 16)), 0n);
}

/** {version, value} of an address, or null. */
export function parseIP(text) {
  const v4 = parseIPv4(String(text).trim());
  if (v4 !== null) return { version: 4, value: v4 };
  const v6 = parseIPv6(String(text).trim());
  return v6 === null ? null : { version: 6, value: v6 };
}

export function formatIP(version, value) {
  if (version === 4) {
    return [24n, 16n, 8n, 0n].map((shift) => String((value >> shift) & 0xffn)).join(".");
  }
  const groups = [];
  for (let shift = 112n; shift >= 0n; shift -= 16n) groups.push((value >> shift) & 0xffffn);
  let best = [-1, 0];
  for (let i = 0; i < 8; ) {
    let j = i;
    while (j < 8 && groups[j] === 0n) j += 1;
    if (j - i > best[1]) best = [i, j - i];
    i = j === i ? i + 1 : j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (best[1] < 2) return hex.join(":");
  const left = hex.slice(0, best[0]).join(":");
  const right = hex.slice(best[0] + best[1]).join(":");
  return `${left}::${right}`;
}

/** {version, value, prefix} of "addr/len", or null. */
export function parseCIDR(text) {
  const parts = String(text).trim().split("/");
  if (parts.length !== 2 || !/^\d{1,3}$/.test(parts[1])) return null;
  const ip = parseIP(parts[0]);
  const prefix = Number(parts[1]);
  if (!ip || prefix > (ip.version === 4 ? 32 : 128)) return null;
  return { ...ip, prefix };
}

function hostMask(cidr) {
  const bits = BigInt(cidr.version === 4 ? 32 : 128);
  return (1n << (bits - BigInt(cidr.prefix))) - 1n;
}

/** Like the API: a CIDR with host bits set is refused, naming the right one. */
export function cidrError(text) {
  const cidr = parseCIDR(text);
  if (!cidr) return `'${text}' is not a valid CIDR (address/prefix length).`;
  const mask = hostMask(cidr);
  if (cidr.value & mask) {
    const net = formatIP(cidr.version, cidr.value & ~mask);
    return `'${text}' isn't a recommended CIDR, use '${net}/${cidr.prefix}' instead.`;
  }
  return null;
}

export function ipInCIDR(ipText, cidrText) {
  const ip = parseIP(ipText);
  const cidr = parseCIDR(cidrText);
  if (!ip || !cidr || ip.version !== cidr.version) return false;
  const mask = hostMask(cidr);
  return (ip.value & ~mask) === (cidr.value & ~mask);
}

export const isIP = (text) => parseIP(text) !== null;
export const isMAC = (text) => /^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$/.test(String(text).trim());

export function ipError(text) {
  return isIP(text) ? null : `'${text}' is not a valid IP address.`;
}

export function ipOrCidrError(text) {
  return isIP(text) || parseCIDR(text) ? null : `'${text}' is not a valid IP address or CIDR.`;
}

export function macError(text) {
  return isMAC(text) ? null : `'${text}' is not a valid MAC address (like fa:16:3e:00:00:01).`;
}

/** A validator for integers in [min, max]. */
export function intIn(min, max) {
  return (text) => {
    const value = Number(text);
    if (!/^-?\d+$/.test(String(text).trim()) || value < min || value > max) {
      return `'${text}' must be a whole number from ${min} to ${max}.`;
    }
    return null;
  };
}

function splitLines(text) {
  return String(text)
    .split(/\n/)
    .map((line) => line.trim())
    .filter((line) => line && !line.startsWith("#"));
}

/** "10.1.0.0/16 via 10.0.0.254" (or "dest,nexthop") per line → routes. */
export function parseRoutes(text) {
  const routes = [];
  for (const line of splitLines(text)) {
    const m = /^(\S+)\s*(?:,|\s+via\s+|\s+)\s*(\S+)$/.exec(line);
    if (!m) return { error: `'${line}': write "destination via nexthop".` };
    const bad = cidrError(m[1]) || ipError(m[2]);
    if (bad) return { error: bad };
    routes.push({ destination: m[1], nexthop: m[2] });
  }
  return { value: routes };
}

export function formatRoutes(routes) {
  return (routes || []).map((r) => `${r.destination} via ${r.nexthop}`).join("\n");
}

/** "10.0.0.10-10.0.0.50" per line → allocation pools. */
export function parsePools(text) {
  const pools = [];
  for (const line of splitLines(text)) {
    const m = /^(\S+)\s*-\s*(\S+)$/.exec(line);
    if (!m) return { error: `'${line}': write "first-last".` };
    const bad = ipError(m[1]) || ipError(m[2]);
    if (bad) return { error: bad };
    if (parseIP(m[1]).value > parseIP(m[2]).value) {
      return { error: `'${line}': the first address is after the last.` };
    }
    pools.push({ start: m[1], end: m[2] });
  }
  return { value: pools };
}

export function formatPools(pools) {
  return (pools || []).map((p) => `${p.start}-${p.end}`).join("\n");
}

/** "8.8.8.8, 1.1.1.1" → ["8.8.8.8", "1.1.1.1"]. */
export function parseAddressList(text) {
  const items = String(text)
    .split(/[\s,]+/)
    .filter(Boolean);
  for (const item of items) {
    const bad = ipError(item);
    if (bad) return { error: bad };
  }
  return { value: items };
}

const PROTOCOLS = new Set([
  "icmp", "igmp", "ipip", "tcp", "egp", "udp", "dccp", "ipv6-encap", "ipv6-route",
  "ipv6-frag", "rsvp", "gre", "esp", "ah", "icmpv6", "ipv6-icmp", "ipv6-nonxt", "ipv6-opts",
  "ospf", "vrrp", "pgm", "sctp", "udplite",
]);

export function protocolError(text) {
  const value = String(text).trim().toLowerCase();
  if (PROTOCOLS.has(value)) return null;
  if (/^\d{1,3}$/.test(value) && Number(value) <= 255) return null;
  return `'${text}' is not a protocol name or number (0-255).`;
}
