"""Port service: MAC and IP allocation, security groups, port security, bindings.

Router interfaces, router gateways, floating IP addresses and load balancer
VIPs are ports too (by ``device_owner``); the L3 and LBaaS services create them
through :func:`create_port_row` so every address goes through one IPAM path.
"""

from __future__ import annotations

import ipaddress
import random
from typing import Any

from sqlalchemy import delete as sql_delete
from sqlalchemy import select
from sqlalchemy.orm import Session

from netvirt.model.l2 import PortCreate, PortUpdate
from netvirt.northbound import ipam
from netvirt.northbound.access import fetch, fetch_network, network_usable, pin
from netvirt.northbound.context import Context
from netvirt.northbound.default_sg import ensure_default_security_group
from netvirt.northbound.errors import BadRequest, Conflict, Forbidden, InvalidInput, not_found
from netvirt.northbound.networks import check_qos_policy
from netvirt.northbound.schema import (
    FloatingIP,
    IPAllocation,
    Network,
    Port,
    PortSecurityGroup,
    SecurityGroup,
    Subnet,
)
from netvirt.northbound.schema.base import standard_fields
from netvirt.northbound.txmemo import remembered

MAC_PREFIX = "fa:16:3e"
EXTERNAL_GATEWAY_OWNER = "network:external_gateway"
RESERVED_OWNERS = (
    "network:router_interface",
    "network:router_gateway",
    "network:floatingip",
    "network:router_interface_distributed",
    "Octavia",
)


def fixed_ips(session: Session, port_id: str) -> list[dict[str, Any]]:
    rows = session.execute(
        select(IPAllocation).where(IPAllocation.port_id == port_id).order_by(IPAllocation.ordinal)
    ).scalars()
    return [ipam.as_fixed_ip(r) for r in rows]


def security_group_ids(session: Session, port_id: str) -> list[str]:
    rows = session.execute(
        select(PortSecurityGroup.security_group_id)
        .where(PortSecurityGroup.port_id == port_id)
        .order_by(PortSecurityGroup.security_group_id)
    ).scalars()
    return list(rows)


def to_dict(session: Session, ctx: Context, port: Port) -> dict[str, Any]:
    return _as_dict(port, fixed_ips(session, port.id), security_group_ids(session, port.id))


def _as_dict(port: Port, ips: list[dict[str, Any]], groups: list[str]) -> dict[str, Any]:
    return standard_fields(port) | {
        "network_id": port.network_id,
        "mac_address": port.mac_address,
        "admin_state_up": port.admin_state_up,
        "status": port.status,
        "device_id": port.device_id,
        "device_owner": port.device_owner,
        "fixed_ips": ips,
        "security_groups": groups,
        "port_security_enabled": port.port_security_enabled,
        "allowed_address_pairs": list(port.allowed_address_pairs),
        "binding:host_id": port.binding_host_id,
        "binding:vnic_type": port.binding_vnic_type,
        "binding:profile": dict(port.binding_profile),
        "binding:vif_type": "netvirt" if port.binding_host_id else "unbound",
        "binding:vif_details": {},
        "qos_policy_id": port.qos_policy_id,
        "extra_dhcp_opts": [],
        "dns_name": "",
        "propagate_uplink_status": False,
    }


def fetch_port(session: Session, ctx: Context, ident: str) -> Port:
    port = fetch(session, Port, ident, "port")
    if not ctx.owns(port.project_id):
        raise not_found("port", ident)
    return port


def _random_mac(session: Session, network_id: str) -> str:
    for _ in range(64):
        tail = random.getrandbits(24)
        mac = f"{MAC_PREFIX}:{tail >> 16:02x}:{(tail >> 8) & 0xFF:02x}:{tail & 0xFF:02x}"
        if not _mac_taken(session, network_id, mac):
            return mac
    raise Conflict("Unable to generate a unique MAC address.", type="MacAddressGenerationFailure")


def _mac_taken(session: Session, network_id: str, mac: str, exclude: str | None = None) -> bool:
    stmt = select(Port.id).where(Port.network_id == network_id, Port.mac_address == mac)
    if exclude:
        stmt = stmt.where(Port.id != exclude)
    return session.execute(stmt).first() is not None


def _network_subnets(session: Session, network_id: str) -> list[Subnet]:
    """The network's subnets in creation order (read once per transaction: a bulk create
    asks for them per port; callers must not modify the list)."""
    return remembered(
        session,
        ("subnets", network_id),
        (Subnet,),
        lambda: list(
            session.execute(
                select(Subnet)
                .where(Subnet.network_id == network_id)
                .order_by(Subnet.created_at, Subnet.id)
            ).scalars()
        ),
    )


def _ip_taken(session: Session, network_id: str, ip: str, port_id: str | None) -> bool:
    row = session.get(IPAllocation, (network_id, ip))
    return row is not None and row.port_id != port_id


def resolve_fixed_ips(
    session: Session,
    net: Network,
    requested: list[dict[str, Any]] | None,
    mac: str,
    *,
    device_owner: str = "",
    port_id: str | None = None,
) -> list[tuple[Subnet, str]]:
    """Turn a port's requested fixed_ips (or none) into concrete (subnet, address) pairs.

    With no request: one address from the first IPv4 subnet with room and one
    from every IPv6 subnet (EUI-64 for SLAAC), as Neutron does.
    """
    subnets = _network_subnets(session, net.id)
    by_id = {s.id: s for s in subnets}
    # the external network's own gateway is outside netvirt, but an admin may model
    # it as a port (the lab's "Internet" namespace) holding the subnet's gateway IP
    allow_gateway = device_owner in ("network:router_interface", "network:router_gateway") or (
        device_owner == EXTERNAL_GATEWAY_OWNER and net.external
    )
    chosen: list[tuple[Subnet, str]] = []
    if requested is None:
        got_v4 = False
        for candidate in subnets:
            if candidate.ip_version == 4 and got_v4:
                continue
            # next_free's address is free by construction (it skips every allocation of
            # the subnet, this transaction's included, and subnets of a network never
            # overlap): only a SLAAC address, derived from the MAC, needs the check
            if ipam.is_slaac(candidate):
                slaac = ipam.eui64(candidate.cidr, mac)
                if _ip_taken(session, net.id, slaac, port_id):
                    continue
                chosen.append((candidate, slaac))
            else:
                free = ipam.next_free(session, candidate)
                if free is None:
                    continue
                chosen.append((candidate, free))
            got_v4 = got_v4 or candidate.ip_version == 4
        if any(s.ip_version == 4 for s in subnets) and not got_v4:
            raise Conflict(
                f"No more IP addresses available on network {net.id}.",
                type="IpAddressGenerationFailure",
            )
        return chosen
    for item in requested:
        subnet_id, ip = item.get("subnet_id"), item.get("ip_address")
        if subnet_id is not None:
            found = by_id.get(subnet_id)
            if found is None:
                raise BadRequest(
                    f"Invalid input for operation: Failed to create port on network {net.id}, "
                    f"because fixed_ips included invalid subnet {subnet_id}.",
                    type="InvalidInput",
                )
            subnet = found
        elif ip is not None:
            found = ipam.subnet_for_ip(subnets, ip)
            if found is None:
                raise InvalidInput(
                    "fixed_ips", f"IP address {ip} is not in any subnet of network {net.id}"
                )
            subnet = found
        else:
            raise InvalidInput("fixed_ips", "each entry needs a subnet_id or an ip_address")
        if ip is None:
            ip = (
                ipam.eui64(subnet.cidr, mac)
                if ipam.is_slaac(subnet)
                else ipam.next_free(session, subnet)
            )
            if ip is None:
                raise Conflict(
                    f"No more IP addresses available on network {net.id}.",
                    type="IpAddressGenerationFailure",
                )
        else:
            ipam.check_ip_in_subnet(subnet, ip, allow_gateway=allow_gateway)
        if _ip_taken(session, net.id, ip, port_id) or any(ip == c for _, c in chosen):
            raise Conflict(
                f"IP address {ip} already allocated in subnet {subnet.id}",
                type="IpAddressAlreadyAllocated",
            )
        chosen.append((subnet, ip))
    return chosen


def _store_ips(
    session: Session, port: Port, chosen: list[tuple[Subnet, str]], *, fresh: bool = False
) -> None:
    """Replace the port's addresses with ``chosen``. ``fresh``: the port was created in
    this transaction and has none yet, so no ``DELETE`` (a bulk statement the change log
    can only record as "some ip_allocations changed") and no extra flush."""
    if not fresh:
        session.execute(sql_delete(IPAllocation).where(IPAllocation.port_id == port.id))
        session.flush()
    for n, (subnet, ip) in enumerate(chosen):
        ipam.note_allocated(session, subnet.id, ip)
        session.add(
            IPAllocation(
                network_id=port.network_id,
                ip_address=ip,
                subnet_id=subnet.id,
                port_id=port.id,
                ordinal=n,
            )
        )
    if not fresh:
        session.flush()


def _check_security_groups(session: Session, ctx: Context, project_id: str, ids: list[str]) -> None:
    for sg_id in ids:
        group = session.get(SecurityGroup, sg_id)
        if group is None or not (ctx.is_admin or group.project_id == project_id):
            raise not_found("security_group", sg_id)
        pin(session, group)


def _set_security_groups(
    session: Session, port_id: str, ids: list[str], *, fresh: bool = False
) -> None:
    """Replace the port's groups with ``ids`` (``fresh``: as for :func:`_store_ips`)."""
    if not fresh:
        session.execute(sql_delete(PortSecurityGroup).where(PortSecurityGroup.port_id == port_id))
    for sg_id in dict.fromkeys(ids):
        session.add(PortSecurityGroup(port_id=port_id, security_group_id=sg_id))
    if not fresh:
        session.flush()


def _with_macs(pairs: list[dict[str, Any]], mac: str) -> list[dict[str, Any]]:
    """A pair without a MAC means the port's own MAC (as Neutron stores it)."""
    return [{**p, "mac_address": p.get("mac_address") or mac} for p in pairs]


def _check_port_security(enabled: bool, groups: list[str], pairs: list[Any]) -> None:
    if not enabled and (groups or pairs):
        raise Conflict(
            "Port security must be enabled and port must have an IP address in order to use "
            "security groups or allowed address pairs.",
            type="PortSecurityAndIPRequiredForSecurityGroups",
        )


def create_port_row(
    session: Session,
    *,
    net: Network,
    project_id: str,
    device_owner: str,
    device_id: str = "",
    fixed: list[dict[str, Any]] | None = None,
    name: str = "",
) -> Port:
    """Create a service port (router interface/gateway, floating IP, VIP): no security
    groups and port security off, as Neutron does for network-owned ports."""
    mac = _random_mac(session, net.id)
    port = Port(
        project_id=project_id,
        network_id=net.id,
        name=name,
        mac_address=mac,
        device_owner=device_owner,
        device_id=device_id,
        port_security_enabled=False,
        status="ACTIVE" if device_owner != "network:floatingip" else "N/A",
    )
    session.add(port)
    session.flush()
    chosen = resolve_fixed_ips(session, net, fixed, mac, device_owner=device_owner, port_id=port.id)
    if not chosen:
        raise Conflict(
            f"No more IP addresses available on network {net.id}.",
            type="IpAddressGenerationFailure",
        )
    _store_ips(session, port, chosen, fresh=True)
    session.flush()
    return port


def create(session: Session, ctx: Context, req: PortCreate) -> dict[str, Any]:
    net = fetch_network(session, ctx, req.network_id)
    if not network_usable(ctx, net):
        raise Forbidden(f"Project {ctx.project_id} may not create ports on network {net.id}.")
    project = ctx.project_for_create(req.project_id or req.tenant_id)
    sent = req.set_fields()
    if not ctx.is_admin:
        if "binding_host_id" in sent or "binding_profile" in sent:
            raise Forbidden("Only admins may set binding:host_id or binding:profile.")
        if req.device_owner.startswith("network:") and req.device_owner != "network:dhcp":
            raise Forbidden(f"Only admins may create ports with device_owner {req.device_owner}.")
    mac = req.mac_address or _random_mac(session, net.id)
    if req.mac_address and _mac_taken(session, net.id, mac):
        raise Conflict(
            f"Unable to complete operation for network {net.id}. The mac address {mac} is in use.",
            type="MacAddressInUse",
        )
    secure = (
        net.port_security_enabled
        if req.port_security_enabled is None
        else req.port_security_enabled
    )
    pairs = _with_macs([p.model_dump() for p in req.allowed_address_pairs], mac)
    if req.security_groups is None:
        groups = [ensure_default_security_group(session, project).id] if secure else []
    else:
        groups = list(req.security_groups)
    _check_port_security(secure, groups, pairs)
    _check_security_groups(session, ctx, project, groups)
    check_qos_policy(session, ctx, req.qos_policy_id)
    port = Port(
        project_id=project,
        network_id=net.id,
        name=req.name,
        description=req.description,
        mac_address=mac,
        admin_state_up=req.admin_state_up,
        device_id=req.device_id,
        device_owner=req.device_owner,
        port_security_enabled=secure,
        allowed_address_pairs=pairs,
        binding_host_id=req.binding_host_id,
        binding_profile=req.binding_profile,
        qos_policy_id=req.qos_policy_id,
    )
    session.add(port)
    session.flush()
    requested = None if req.fixed_ips is None else [f.model_dump() for f in req.fixed_ips]
    chosen = resolve_fixed_ips(
        session, net, requested, mac, device_owner=req.device_owner, port_id=port.id
    )
    _store_ips(session, port, chosen, fresh=True)
    _set_security_groups(session, port.id, groups, fresh=True)
    session.flush()
    # the rows just written, as to_dict would read them back (two queries fewer a port)
    ips = [{"subnet_id": subnet.id, "ip_address": ip} for subnet, ip in chosen]
    return _as_dict(port, ips, sorted(dict.fromkeys(groups)))


def get(session: Session, ctx: Context, ident: str) -> dict[str, Any]:
    return to_dict(session, ctx, fetch_port(session, ctx, ident))


def list_all(session: Session, ctx: Context) -> list[dict[str, Any]]:
    stmt = select(Port).order_by(Port.id)
    if not ctx.is_admin:
        stmt = stmt.where(Port.project_id == ctx.project_id)
    return to_dicts(session, list(session.execute(stmt).scalars()))


def list_by_ids(session: Session, ids: list[str]) -> list[dict[str, Any]]:
    """The ports among ``ids`` that exist, in id order, as an admin sees them (the
    compiler's incremental NB load)."""
    rows: list[Port] = []
    for start in range(0, len(ids), CHUNK):
        part = ids[start : start + CHUNK]
        rows += session.execute(select(Port).where(Port.id.in_(part))).scalars()
    return to_dicts(session, sorted(rows, key=lambda p: p.id))


CHUNK = 500  # ids per IN (...) query: far below SQLite's variable limit


def to_dicts(session: Session, rows: list[Port]) -> list[dict[str, Any]]:
    """:func:`to_dict` of many ports with two queries for all of them, not two per port
    (listing 10k ports was 20k queries)."""
    ips: dict[str, list[dict[str, Any]]] = {p.id: [] for p in rows}
    groups: dict[str, list[str]] = {p.id: [] for p in rows}
    ids = list(ips)
    for start in range(0, len(ids), CHUNK):
        part = ids[start : start + CHUNK]
        allocs = session.execute(
            select(IPAllocation)
            .where(IPAllocation.port_id.in_(part))
            .order_by(IPAllocation.port_id, IPAllocation.ordinal)
        ).scalars()
        for row in allocs:
            ips[row.port_id].append(ipam.as_fixed_ip(row))
        sgs = session.execute(
            select(PortSecurityGroup.port_id, PortSecurityGroup.security_group_id)
            .where(PortSecurityGroup.port_id.in_(part))
            .order_by(PortSecurityGroup.port_id, PortSecurityGroup.security_group_id)
        ).all()
        for port_id, group_id in sgs:
            groups[port_id].append(group_id)
    return [_as_dict(p, ips[p.id], groups[p.id]) for p in rows]


def update(session: Session, ctx: Context, ident: str, req: PortUpdate) -> dict[str, Any]:
    port = fetch_port(session, ctx, ident)
    changes = req.set_fields()
    if not ctx.is_admin and ({"binding_host_id", "binding_profile"} & changes.keys()):
        raise Forbidden("Only admins may set binding:host_id or binding:profile.")
    net = session.get(Network, port.network_id)
    assert net is not None
    if changes.get("mac_address") and changes["mac_address"] != port.mac_address:
        if port.binding_host_id and not ctx.is_admin:
            raise Conflict(f"Port {ident} is bound; its MAC cannot change.", type="PortBound")
        if _mac_taken(session, net.id, changes["mac_address"], exclude=port.id):
            raise Conflict(
                f"The mac address {changes['mac_address']} is in use.", type="MacAddressInUse"
            )
        port.mac_address = changes["mac_address"]
    if changes.get("fixed_ips") is not None:
        chosen = resolve_fixed_ips(
            session,
            net,
            [dict(f) for f in changes["fixed_ips"]],
            port.mac_address,
            device_owner=port.device_owner,
            port_id=port.id,
        )
        _release_floating_ips(session, port, {ip for _, ip in chosen})
        _store_ips(session, port, chosen)
    secure = changes.get("port_security_enabled")
    secure = port.port_security_enabled if secure is None else secure
    groups = changes.get("security_groups")
    if groups is None:
        # Neutron refuses (409) rather than silently dropping the groups when
        # port security is turned off without clearing them.
        groups = security_group_ids(session, port.id)
    pairs = changes.get("allowed_address_pairs")
    if pairs is None:
        pairs = list(port.allowed_address_pairs)
    else:
        pairs = _with_macs([dict(p) for p in pairs], port.mac_address)
    _check_port_security(secure, groups, pairs)
    _check_security_groups(session, ctx, port.project_id, groups)
    if "qos_policy_id" in changes:
        check_qos_policy(session, ctx, changes["qos_policy_id"])
        port.qos_policy_id = changes["qos_policy_id"]
    port.port_security_enabled = secure
    port.allowed_address_pairs = pairs
    _set_security_groups(session, port.id, groups)
    for key in (
        "name",
        "description",
        "admin_state_up",
        "device_id",
        "device_owner",
        "binding_host_id",
        "binding_profile",
    ):
        if changes.get(key) is not None:
            setattr(port, key, changes[key])
    port.revision_number += 1
    session.flush()
    return to_dict(session, ctx, port)


def _release_floating_ips(session: Session, port: Port, keep: set[str]) -> None:
    """Disassociate floating IPs whose fixed address the port no longer has."""
    for fip in session.execute(
        select(FloatingIP).where(FloatingIP.fixed_port_id == port.id)
    ).scalars():
        if fip.fixed_ip_address not in keep:
            fip.fixed_port_id = None
            fip.fixed_ip_address = None
            fip.router_id = None
            fip.status = "DOWN"


def delete(session: Session, ctx: Context, ident: str, *, internal: bool = False) -> None:
    port = fetch_port(session, ctx, ident)
    if not internal and port.device_owner in RESERVED_OWNERS:
        raise Conflict(
            f"Port {ident} cannot be deleted directly via the port API: "
            f"has device owner {port.device_owner}.",
            type="ServicePortInUse",
        )
    _release_floating_ips(session, port, set())
    session.flush()
    session.execute(sql_delete(IPAllocation).where(IPAllocation.port_id == port.id))
    session.execute(sql_delete(PortSecurityGroup).where(PortSecurityGroup.port_id == port.id))
    session.delete(port)
    session.flush()


def first_ipv4(session: Session, port_id: str) -> str | None:
    for item in fixed_ips(session, port_id):
        if ipaddress.ip_address(item["ip_address"]).version == 4:
            return str(item["ip_address"])
    return None
