"""Service monitors: which load-balancer members the hosts health-check, and how.

Not a flow builder: health checks are run by the host where a member's VIF is
bound (``agent/health.py``), so the compiler only says *what* to check, as
:class:`~netvirt.southbound.model.ServiceMonitor` records keyed by member id.
The results come back as member ``operating_status`` reports, which the
``lb`` builder reads (members OFFLINE or ERROR get no new connections): the
loop closes through the NB, one recompile per status change.

Which members: enabled members of a pool whose health monitor is enabled, the
same rule :func:`netvirt.northbound.lbaas_members.set_member_operating_status`
applies to reports, so every monitored member can be reported and every
accepted report has a monitor. A member is checked at ``monitor_address`` /
``monitor_port`` when set (Octavia's alternate health-check endpoint), else
at its own address and port. Its VIF is the port holding that address as a
fixed IP on the member's subnet's network (the VIP's network when the member
names no subnet). Members whose address is not a VIF's (an address behind a
router, a port of another kind) are skipped: a host can only probe what is
plugged into it.

The probe source is the VIP address with the VIP port's MAC; the reasons are
in the :class:`ServiceMonitor` docstring.
"""

from __future__ import annotations

import ipaddress
from ipaddress import IPv4Address, IPv6Address

from netvirt.compiler.nb import NBSnapshot, Obj
from netvirt.southbound.model import PortBinding, SBState, ServiceMonitor

HTTP_DEFAULTS = {"http_method": "GET", "url_path": "/", "expected_codes": "200"}
TYPES = ("PING", "TCP", "HTTP")
IPAddress = IPv4Address | IPv6Address


def service_monitors(nb: NBSnapshot, sb: SBState) -> dict[str, ServiceMonitor]:
    """Every member to check, by member id (a pure function of ``nb`` and the bindings)."""
    monitors = {
        str(pool["id"]): hm
        for hm in nb.healthmonitors
        if hm.get("admin_state_up", True) and hm.get("type") in TYPES
        for pool in hm.get("pools", [])
    }
    pools = nb.by_id("pools")
    vifs = vif_index(nb, sb) if monitors else {}
    out: dict[str, ServiceMonitor] = {}
    for member in sorted(nb.members, key=lambda m: str(m["id"])):
        hm = monitors.get(str(member["pool_id"]))
        pool = pools.get(str(member["pool_id"]))
        if hm is None or pool is None or not member.get("admin_state_up", True):
            continue
        lb = _loadbalancer_of(nb, pool)
        if lb is None:
            continue
        record = _monitor(nb, vifs, lb, hm, member)
        if record is not None:
            out[record.member_id] = record
    return out


def _loadbalancer_of(nb: NBSnapshot, pool: Obj) -> Obj | None:
    """The pool's load balancer (``loadbalancers`` ref, else through a listener using it)."""
    lbs = nb.by_id("loadbalancers")
    for ref in pool.get("loadbalancers", []):
        if ref["id"] in lbs:
            return lbs[ref["id"]]
    for listener in sorted(nb.listeners, key=lambda o: str(o["id"])):
        if listener.get("default_pool_id") == pool["id"]:
            for ref in listener.get("loadbalancers", []):
                if ref["id"] in lbs:
                    return lbs[ref["id"]]
    return None


def _target(member: Obj) -> tuple[str, int]:
    address = member.get("monitor_address") or member["address"]
    port = member.get("monitor_port") or member["protocol_port"]
    return str(address), int(port)


def _member_network(nb: NBSnapshot, lb: Obj, member: Obj) -> str:
    subnet = nb.by_id("subnets").get(str(member.get("subnet_id") or ""))
    return str(subnet["network_id"] if subnet is not None else lb["vip_network_id"])


VifIndex = dict[tuple[str, IPAddress], PortBinding]


def vif_index(nb: NBSnapshot, sb: SBState) -> VifIndex:
    """(network id, fixed IP) → logical port of every VIF (IPs are unique per network)."""
    out: VifIndex = {}
    for port in sorted(nb.ports, key=lambda p: str(p["id"])):
        binding = sb.ports.get(str(port["id"]))
        if binding is None or binding.type != "vif":
            continue
        for fixed in port["fixed_ips"]:
            key = (str(port["network_id"]), ipaddress.ip_address(fixed["ip_address"]))
            out.setdefault(key, binding)
    return out


def member_port(nb: NBSnapshot, vifs: VifIndex, lb: Obj, member: Obj) -> PortBinding | None:
    """The binding of the VIF holding the member's (monitor) address, if any."""
    address = ipaddress.ip_address(_target(member)[0])
    return vifs.get((_member_network(nb, lb, member), address))


def _vip_mac(nb: NBSnapshot, lb: Obj) -> int | None:
    port = nb.by_id("ports").get(str(lb.get("vip_port_id") or ""))
    if port is None:
        return None
    return int(str(port["mac_address"]).replace(":", ""), 16)


def _monitor(
    nb: NBSnapshot, vifs: VifIndex, lb: Obj, hm: Obj, member: Obj
) -> ServiceMonitor | None:
    ip, port = _target(member)
    source_ip = str(lb["vip_address"])
    if ipaddress.ip_address(ip).version != ipaddress.ip_address(source_ip).version:
        return None
    source_mac = _vip_mac(nb, lb)
    vif = member_port(nb, vifs, lb, member)
    if source_mac is None or vif is None:
        return None
    http = {k: str(hm.get(k) or v) for k, v in HTTP_DEFAULTS.items()}
    if hm["type"] != "HTTP":
        http = dict.fromkeys(HTTP_DEFAULTS, "")
    return ServiceMonitor(
        member_id=str(member["id"]),
        pool_id=str(member["pool_id"]),
        monitor_id=str(hm["id"]),
        logical_port=vif.name,
        member_mac=vif.mac,
        ip=ip,
        port=port,
        type=hm["type"],
        delay=int(hm["delay"]),
        timeout=int(hm["timeout"]),
        max_retries=int(hm["max_retries"]),
        max_retries_down=int(hm.get("max_retries_down") or 3),
        source_ip=source_ip,
        source_mac=source_mac,
        **http,
    )
