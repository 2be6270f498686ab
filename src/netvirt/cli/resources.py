"""``netvirt network|subnet|port …``: the L2 verbs.

Every reference to another object (``--network web``) accepts a name or an
id and is resolved through the client before the request, so the API only
ever sees ids, as Neutron's does.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from netvirt.api.client import Json
from netvirt.cli.common import (
    Cli,
    Description,
    NameArg,
    ProjectOpt,
    Ref,
    Refs,
    exclusive,
    only_set,
    parse_pair,
    project_id,
    require_change,
    usage,
    verb,
)
from netvirt.cli.output import Column, fixed_ips_of, print_done, print_item, print_list

network_app = typer.Typer(no_args_is_help=True, help="Virtual networks (logical switches).")
subnet_app = typer.Typer(no_args_is_help=True, help="Subnets: CIDR, gateway, DHCP, routes.")
port_app = typer.Typer(no_args_is_help=True, help="Ports: addresses, security, host binding.")


class Ipv6Mode(StrEnum):
    slaac = "slaac"
    dhcpv6_stateful = "dhcpv6-stateful"
    dhcpv6_stateless = "dhcpv6-stateless"


NETWORK_COLUMNS: list[Column] = [
    ("ID", "id"),
    ("Name", "name"),
    ("Subnets", "subnets"),
    ("Shared", "shared"),
    ("External", "router:external"),
    ("MTU", "mtu"),
    ("Status", "status"),
    ("Project", "project_id"),
]
SUBNET_COLUMNS: list[Column] = [
    ("ID", "id"),
    ("Name", "name"),
    ("Network", "network_id"),
    ("CIDR", "cidr"),
    ("Gateway", "gateway_ip"),
    ("DHCP", "enable_dhcp"),
]
PORT_COLUMNS: list[Column] = [
    ("ID", "id"),
    ("Name", "name"),
    ("Network", "network_id"),
    ("MAC", "mac_address"),
    ("Fixed IPs", fixed_ips_of),
    ("Owner", "device_owner"),
    ("Status", "status"),
]

NetworkOpt = Annotated[str, typer.Option("--network", help="Network name or id.")]
QosOpt = Annotated[str | None, typer.Option("--qos-policy", help="QoS policy name or id.")]


def _qos_id(cli: Cli, policy: str | None) -> str | None:
    return None if policy is None else str(cli.client.find_qos_policy(policy)["id"])


# ---------------------------------------------------------------------- networks


@verb(network_app, "create", write=True)
def network_create(
    cli: Cli,
    name: NameArg,
    project: ProjectOpt = None,
    shared: Annotated[bool, typer.Option(help="Visible to every project (admin).")] = False,
    external: Annotated[
        bool, typer.Option(help="External network for router gateways (admin).")
    ] = False,
    mtu: Annotated[int | None, typer.Option(help="MTU of the network.")] = None,
    disable_port_security: Annotated[
        bool, typer.Option(help="Ports default to no port security.")
    ] = False,
    qos_policy: QosOpt = None,
    description: Description = None,
) -> None:
    """Create a network."""
    attrs = only_set(
        name=name,
        project_id=project_id(cli, project),
        mtu=mtu,
        qos_policy_id=_qos_id(cli, qos_policy),
        description=description,
    )
    if shared:
        attrs["shared"] = True
    if external:
        attrs["router:external"] = True
    if disable_port_security:
        attrs["port_security_enabled"] = False
    print_item(cli.client.create_network(**attrs), cli.json)


@verb(network_app, "list", pages=True)
def network_list(
    cli: Cli,
    project: ProjectOpt = None,
    name: Annotated[str | None, typer.Option(help="Only this name.")] = None,
    external: Annotated[
        bool | None, typer.Option("--external/--internal", help="Only external/internal.")
    ] = None,
) -> None:
    """List the networks you can see."""
    filters = only_set(project_id=project_id(cli, project), name=name)
    if external is not None:
        filters["router:external"] = external
    print_list(cli.client.list_networks(**filters), NETWORK_COLUMNS, cli.json)


@verb(network_app, "show")
def network_show(cli: Cli, network: Ref) -> None:
    """Show one network."""
    print_item(cli.client.find_network(network), cli.json)


@verb(network_app, "update", write=True)
def network_update(
    cli: Cli,
    network: Ref,
    name: Annotated[str | None, typer.Option(help="New name.")] = None,
    description: Description = None,
    mtu: Annotated[int | None, typer.Option(help="New MTU.")] = None,
    shared: Annotated[bool | None, typer.Option("--shared/--no-shared")] = None,
    external: Annotated[bool | None, typer.Option("--external/--no-external")] = None,
    port_security: Annotated[
        bool | None, typer.Option("--port-security/--no-port-security")
    ] = None,
    qos_policy: QosOpt = None,
    no_qos_policy: Annotated[bool, typer.Option(help="Detach the QoS policy.")] = False,
) -> None:
    """Change a network's attributes."""
    exclusive(qos_policy=qos_policy, no_qos_policy=no_qos_policy)
    attrs = only_set(
        name=name,
        description=description,
        mtu=mtu,
        shared=shared,
        port_security_enabled=port_security,
        qos_policy_id=_qos_id(cli, qos_policy),
    )
    if external is not None:
        attrs["router:external"] = external
    if no_qos_policy:
        attrs["qos_policy_id"] = None
    net = cli.client.find_network(network)
    print_item(cli.client.update_network(net["id"], **require_change(attrs)), cli.json)


@verb(network_app, "delete", json=False, write=True)
def network_delete(cli: Cli, networks: Refs) -> None:
    """Delete networks (they must have no ports left)."""
    for ref in networks:
        net = cli.client.find_network(ref)
        cli.client.delete_network(net["id"])
        print_done(f"deleted network {net['id']}")


# ---------------------------------------------------------------------- subnets


def _pools(pools: list[str] | None) -> list[Json] | None:
    if not pools:
        return None
    pairs = [parse_pair(p, "-", "--pool") for p in pools]
    return [{"start": start, "end": end} for start, end in pairs]


def _routes(routes: list[str] | None) -> list[Json] | None:
    if routes is None:
        return None
    pairs = [parse_pair(r, "=", "--host-route") for r in routes]
    return [{"destination": dst, "nexthop": hop} for dst, hop in pairs]


PoolOpt = Annotated[
    list[str] | None, typer.Option("--pool", help="Allocation pool START-END (repeatable).")
]
DnsOpt = Annotated[list[str] | None, typer.Option("--dns", help="DNS server (repeatable).")]
RouteOpt = Annotated[
    list[str] | None, typer.Option("--host-route", help="DST=NEXTHOP (repeatable).")
]
GatewayOpt = Annotated[str | None, typer.Option("--gateway", help="Gateway IP.")]
NoGatewayOpt = Annotated[bool, typer.Option("--no-gateway", help="No gateway at all.")]


@verb(subnet_app, "create", write=True)
def subnet_create(
    cli: Cli,
    name: NameArg,
    network: NetworkOpt,
    cidr: Annotated[str, typer.Option("--cidr", help="e.g. 10.0.0.0/24 or fd00::/64")],
    gateway: GatewayOpt = None,
    no_gateway: NoGatewayOpt = False,
    dns: DnsOpt = None,
    pool: PoolOpt = None,
    host_route: RouteOpt = None,
    ip_version: Annotated[int, typer.Option("--ip-version", min=4, max=6)] = 4,
    ipv6_mode: Annotated[Ipv6Mode | None, typer.Option(help="IPv6 RA and address mode.")] = None,
    dhcp: Annotated[bool, typer.Option("--dhcp/--no-dhcp", help="Serve DHCP.")] = True,
    project: ProjectOpt = None,
    description: Description = None,
) -> None:
    """Create a subnet on a network."""
    exclusive(gateway=gateway, no_gateway=no_gateway)
    if ip_version not in (4, 6):
        raise usage("--ip-version must be 4 or 6")
    net = cli.client.find_network(network)
    attrs = only_set(
        name=name,
        network_id=net["id"],
        cidr=cidr,
        ip_version=ip_version,
        gateway_ip=gateway,
        dns_nameservers=dns or None,
        allocation_pools=_pools(pool),
        host_routes=_routes(host_route),
        project_id=project_id(cli, project),
        description=description,
    )
    if no_gateway:
        attrs["gateway_ip"] = None
    if not dhcp:
        attrs["enable_dhcp"] = False
    if ipv6_mode is not None:
        attrs["ipv6_ra_mode"] = attrs["ipv6_address_mode"] = ipv6_mode.value
    print_item(cli.client.create_subnet(**attrs), cli.json)


@verb(subnet_app, "list", pages=True)
def subnet_list(
    cli: Cli,
    network: Annotated[str | None, typer.Option(help="Only this network's subnets.")] = None,
) -> None:
    """List subnets."""
    filters = {} if network is None else {"network_id": cli.client.find_network(network)["id"]}
    print_list(cli.client.list_subnets(**filters), SUBNET_COLUMNS, cli.json)


@verb(subnet_app, "show")
def subnet_show(cli: Cli, subnet: Ref) -> None:
    """Show one subnet."""
    print_item(cli.client.find_subnet(subnet), cli.json)


@verb(subnet_app, "update", write=True)
def subnet_update(
    cli: Cli,
    subnet: Ref,
    name: Annotated[str | None, typer.Option(help="New name.")] = None,
    description: Description = None,
    gateway: GatewayOpt = None,
    no_gateway: NoGatewayOpt = False,
    dns: DnsOpt = None,
    pool: PoolOpt = None,
    host_route: RouteOpt = None,
    no_host_routes: Annotated[bool, typer.Option(help="Remove every host route.")] = False,
    dhcp: Annotated[bool | None, typer.Option("--dhcp/--no-dhcp")] = None,
) -> None:
    """Change a subnet (lists given replace the current ones)."""
    exclusive(gateway=gateway, no_gateway=no_gateway)
    exclusive(host_route=host_route, no_host_routes=no_host_routes)
    attrs = only_set(
        name=name,
        description=description,
        gateway_ip=gateway,
        dns_nameservers=dns or None,
        allocation_pools=_pools(pool),
        host_routes=[] if no_host_routes else _routes(host_route),
        enable_dhcp=dhcp,
    )
    if no_gateway:
        attrs["gateway_ip"] = None
    sub = cli.client.find_subnet(subnet)
    print_item(cli.client.update_subnet(sub["id"], **require_change(attrs)), cli.json)


@verb(subnet_app, "delete", json=False, write=True)
def subnet_delete(cli: Cli, subnets: Refs) -> None:
    """Delete subnets (no address of theirs may be in use)."""
    for ref in subnets:
        sub = cli.client.find_subnet(ref)
        cli.client.delete_subnet(sub["id"])
        print_done(f"deleted subnet {sub['id']}")


# ---------------------------------------------------------------------- ports


def _address_pairs(pairs: list[str] | None) -> list[Json] | None:
    if pairs is None:
        return None
    result: list[Json] = []
    for text in pairs:
        ip, _, mac = text.partition(",")
        result.append(only_set(ip_address=ip.strip(), mac_address=mac.strip() or None))
    return result


def _groups(cli: Cli, groups: list[str] | None, none: bool) -> list[str] | None:
    exclusive(security_group=groups, no_security_groups=none)
    if none:
        return []
    if not groups:
        return None
    return [str(cli.client.find_security_group(g)["id"]) for g in groups]


SgOpt = Annotated[
    list[str] | None,
    typer.Option("--security-group", help="Security group name or id (repeatable)."),
]
NoSgOpt = Annotated[bool, typer.Option(help="Attach no security group at all.")]
PairOpt = Annotated[
    list[str] | None,
    typer.Option("--allowed-address", help="Extra allowed IP[/LEN][,MAC] (repeatable)."),
]
HostOpt = Annotated[str | None, typer.Option("--host", help="Bind to this host (binding:host_id).")]


@verb(port_app, "create", write=True)
def port_create(
    cli: Cli,
    name: NameArg,
    network: NetworkOpt,
    ip: Annotated[list[str] | None, typer.Option("--ip", help="Fixed IP (repeatable).")] = None,
    subnet: Annotated[
        list[str] | None, typer.Option("--subnet", help="Take an address from this subnet.")
    ] = None,
    mac: Annotated[str | None, typer.Option("--mac", help="MAC address.")] = None,
    security_group: SgOpt = None,
    no_security_groups: NoSgOpt = False,
    disable_port_security: Annotated[
        bool, typer.Option(help="No anti-spoofing, no security groups.")
    ] = False,
    allowed_address: PairOpt = None,
    host: HostOpt = None,
    device_id: Annotated[str | None, typer.Option(help="Owning device id.")] = None,
    device_owner: Annotated[str | None, typer.Option(help="e.g. compute:nova")] = None,
    qos_policy: QosOpt = None,
    project: ProjectOpt = None,
    description: Description = None,
) -> None:
    """Create a port on a network."""
    net = cli.client.find_network(network)
    fixed = [{"ip_address": a} for a in ip or []]
    fixed += [{"subnet_id": cli.client.find_subnet(s)["id"]} for s in subnet or []]
    attrs = only_set(
        name=name,
        network_id=net["id"],
        fixed_ips=fixed or None,
        mac_address=mac,
        security_groups=_groups(cli, security_group, no_security_groups),
        allowed_address_pairs=_address_pairs(allowed_address),
        device_id=device_id,
        device_owner=device_owner,
        qos_policy_id=_qos_id(cli, qos_policy),
        project_id=project_id(cli, project),
        description=description,
    )
    if host is not None:
        attrs["binding:host_id"] = host
    if disable_port_security:
        attrs["port_security_enabled"] = False
    print_item(cli.client.create_port(**attrs), cli.json)


@verb(port_app, "list", pages=True)
def port_list(
    cli: Cli,
    network: Annotated[str | None, typer.Option(help="Only this network's ports.")] = None,
    device_id: Annotated[str | None, typer.Option(help="Only this device's ports.")] = None,
    host: Annotated[str | None, typer.Option(help="Only ports bound to this host.")] = None,
) -> None:
    """List ports."""
    filters = only_set(device_id=device_id)
    if network is not None:
        filters["network_id"] = cli.client.find_network(network)["id"]
    if host is not None:
        filters["binding:host_id"] = host
    print_list(cli.client.list_ports(**filters), PORT_COLUMNS, cli.json)


@verb(port_app, "show")
def port_show(cli: Cli, port: Ref) -> None:
    """Show one port."""
    print_item(cli.client.find_port(port), cli.json)


@verb(port_app, "update", write=True)
def port_update(
    cli: Cli,
    port: Ref,
    name: Annotated[str | None, typer.Option(help="New name.")] = None,
    description: Description = None,
    security_group: SgOpt = None,
    no_security_groups: NoSgOpt = False,
    port_security: Annotated[
        bool | None, typer.Option("--port-security/--no-port-security")
    ] = None,
    allowed_address: PairOpt = None,
    no_allowed_addresses: Annotated[bool, typer.Option(help="Remove every pair.")] = False,
    host: HostOpt = None,
    qos_policy: QosOpt = None,
    no_qos_policy: Annotated[bool, typer.Option(help="Detach the QoS policy.")] = False,
    admin_up: Annotated[bool | None, typer.Option("--up/--down", help="Admin state.")] = None,
) -> None:
    """Change a port (lists given replace the current ones)."""
    exclusive(allowed_address=allowed_address, no_allowed_addresses=no_allowed_addresses)
    exclusive(qos_policy=qos_policy, no_qos_policy=no_qos_policy)
    attrs = only_set(
        name=name,
        description=description,
        security_groups=_groups(cli, security_group, no_security_groups),
        port_security_enabled=port_security,
        allowed_address_pairs=[] if no_allowed_addresses else _address_pairs(allowed_address),
        qos_policy_id=_qos_id(cli, qos_policy),
        admin_state_up=admin_up,
    )
    if host is not None:
        attrs["binding:host_id"] = host
    if no_qos_policy:
        attrs["qos_policy_id"] = None
    found = cli.client.find_port(port)
    print_item(cli.client.update_port(found["id"], **require_change(attrs)), cli.json)


@verb(port_app, "delete", json=False, write=True)
def port_delete(cli: Cli, ports: Refs) -> None:
    """Delete ports."""
    for ref in ports:
        found = cli.client.find_port(ref)
        cli.client.delete_port(found["id"])
        print_done(f"deleted port {found['id']}")
