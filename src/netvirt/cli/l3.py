"""``netvirt router|floating-ip …``: routing, gateways, extra routes, floating IPs.

Extra routes are edited by read-modify-write of the router's ``routes``
list (Neutron's ``extraroute`` shape); the revision number the server bumps
makes a concurrent edit visible in ``router show``.
"""

from __future__ import annotations

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
    project_id,
    require_change,
    usage,
    verb,
)
from netvirt.cli.output import Column, print_done, print_item, print_list

router_app = typer.Typer(no_args_is_help=True, help="Routers: interfaces, gateway, routes.")
fip_app = typer.Typer(no_args_is_help=True, help="Floating IPs (1:1 NAT from an external net).")


def _gateway_network(router: Json) -> str | None:
    info = router.get("external_gateway_info") or {}
    return info.get("network_id")


def _snat(router: Json) -> bool | None:
    info = router.get("external_gateway_info") or {}
    return info.get("enable_snat") if info else None


ROUTER_COLUMNS: list[Column] = [
    ("ID", "id"),
    ("Name", "name"),
    ("External network", _gateway_network),
    ("SNAT", _snat),
    ("Routes", lambda r: [f"{x['destination']} via {x['nexthop']}" for x in r.get("routes", [])]),
    ("Status", "status"),
    ("Project", "project_id"),
]
FIP_COLUMNS: list[Column] = [
    ("ID", "id"),
    ("Floating IP", "floating_ip_address"),
    ("Fixed IP", "fixed_ip_address"),
    ("Port", "port_id"),
    ("Router", "router_id"),
    ("Status", "status"),
]
ExtNetOpt = Annotated[
    str | None, typer.Option("--external-network", help="External network name or id.")
]
SnatOpt = Annotated[bool, typer.Option(help="No source NAT on the gateway.")]


def _gateway(cli: Cli, network: str, disable_snat: bool) -> Json:
    info: Json = {"network_id": cli.client.find_network(network)["id"]}
    if disable_snat:
        info["enable_snat"] = False
    return info


# ---------------------------------------------------------------------- routers


@verb(router_app, "create", write=True)
def router_create(
    cli: Cli,
    name: NameArg,
    external_network: ExtNetOpt = None,
    disable_snat: SnatOpt = False,
    project: ProjectOpt = None,
    description: Description = None,
) -> None:
    """Create a router, optionally with a gateway on an external network."""
    if disable_snat and external_network is None:
        raise usage("--disable-snat needs --external-network")
    attrs = only_set(name=name, project_id=project_id(cli, project), description=description)
    if external_network is not None:
        attrs["external_gateway_info"] = _gateway(cli, external_network, disable_snat)
    print_item(cli.client.create_router(**attrs), cli.json)


@verb(router_app, "list", pages=True)
def router_list(cli: Cli, project: ProjectOpt = None) -> None:
    """List routers."""
    filters = only_set(project_id=project_id(cli, project))
    print_list(cli.client.list_routers(**filters), ROUTER_COLUMNS, cli.json)


@verb(router_app, "show")
def router_show(cli: Cli, router: Ref) -> None:
    """Show one router."""
    print_item(cli.client.find_router(router), cli.json)


@verb(router_app, "update", write=True)
def router_update(
    cli: Cli,
    router: Ref,
    name: Annotated[str | None, typer.Option(help="New name.")] = None,
    description: Description = None,
    admin_up: Annotated[bool | None, typer.Option("--up/--down", help="Admin state.")] = None,
) -> None:
    """Rename a router or change its admin state."""
    attrs = only_set(name=name, description=description, admin_state_up=admin_up)
    found = cli.client.find_router(router)
    print_item(cli.client.update_router(found["id"], **require_change(attrs)), cli.json)


@verb(router_app, "delete", json=False, write=True)
def router_delete(cli: Cli, routers: Refs) -> None:
    """Delete routers (remove their interfaces first)."""
    for ref in routers:
        found = cli.client.find_router(ref)
        cli.client.delete_router(found["id"])
        print_done(f"deleted router {found['id']}")


SubnetArg = Annotated[str | None, typer.Argument(help="Subnet name or id.")]
PortOpt = Annotated[str | None, typer.Option("--port", help="An existing port instead.")]


def _interface(cli: Cli, subnet: str | None, port: str | None) -> Json:
    exclusive(subnet=subnet, port=port)
    if subnet is not None:
        return {"subnet_id": cli.client.find_subnet(subnet)["id"]}
    if port is not None:
        return {"port_id": cli.client.find_port(port)["id"]}
    raise usage("give a SUBNET or --port")


@verb(router_app, "add-interface", write=True)
def router_add_interface(
    cli: Cli, router: Ref, subnet: SubnetArg = None, port: PortOpt = None
) -> None:
    """Attach a subnet (the router takes its gateway IP) or an existing port."""
    found = cli.client.find_router(router)
    body = _interface(cli, subnet, port)
    print_item(cli.client.add_router_interface(found["id"], **body), cli.json)


@verb(router_app, "remove-interface", write=True)
def router_remove_interface(
    cli: Cli, router: Ref, subnet: SubnetArg = None, port: PortOpt = None
) -> None:
    """Detach a subnet or port from a router."""
    found = cli.client.find_router(router)
    body = _interface(cli, subnet, port)
    print_item(cli.client.remove_router_interface(found["id"], **body), cli.json)


@verb(router_app, "set-gateway", write=True)
def router_set_gateway(
    cli: Cli,
    router: Ref,
    network: Annotated[str, typer.Argument(help="External network name or id.")],
    disable_snat: SnatOpt = False,
) -> None:
    """Set (or replace) the router's external gateway."""
    found = cli.client.find_router(router)
    info = _gateway(cli, network, disable_snat)
    print_item(cli.client.update_router(found["id"], external_gateway_info=info), cli.json)


@verb(router_app, "clear-gateway", write=True)
def router_clear_gateway(cli: Cli, router: Ref) -> None:
    """Remove the router's external gateway."""
    found = cli.client.find_router(router)
    print_item(cli.client.update_router(found["id"], external_gateway_info={}), cli.json)


DstArg = Annotated[str, typer.Argument(help="Destination CIDR.")]
HopArg = Annotated[str, typer.Argument(help="Next-hop IP address.")]


@verb(router_app, "add-route", write=True)
def router_add_route(cli: Cli, router: Ref, destination: DstArg, nexthop: HopArg) -> None:
    """Add an extra route DESTINATION via NEXTHOP."""
    found = cli.client.find_router(router)
    route = {"destination": destination, "nexthop": nexthop}
    routes = list(found.get("routes") or [])
    if route in routes:
        raise usage(f"router already has the route {destination} via {nexthop}")
    updated = cli.client.update_router(found["id"], routes=[*routes, route])
    print_item(updated, cli.json)


@verb(router_app, "remove-route", write=True)
def router_remove_route(cli: Cli, router: Ref, destination: DstArg, nexthop: HopArg) -> None:
    """Remove an extra route."""
    found = cli.client.find_router(router)
    route = {"destination": destination, "nexthop": nexthop}
    routes = list(found.get("routes") or [])
    if route not in routes:
        raise usage(f"router has no route {destination} via {nexthop}")
    kept = [r for r in routes if r != route]
    print_item(cli.client.update_router(found["id"], routes=kept), cli.json)


# ---------------------------------------------------------------------- floating IPs

FipRef = Annotated[str, typer.Argument(help="Floating IP id or address.")]


@verb(fip_app, "create", write=True)
def fip_create(
    cli: Cli,
    network: Annotated[str, typer.Option("--network", help="External network name or id.")],
    port: Annotated[str | None, typer.Option(help="Associate with this port.")] = None,
    fixed_ip: Annotated[
        str | None, typer.Option(help="Which of the port's addresses (if several).")
    ] = None,
    address: Annotated[
        str | None, typer.Option("--address", help="Ask for this floating address.")
    ] = None,
    project: ProjectOpt = None,
    description: Description = None,
) -> None:
    """Allocate a floating IP, optionally associated with a port."""
    if fixed_ip is not None and port is None:
        raise usage("--fixed-ip needs --port")
    attrs = only_set(
        floating_network_id=cli.client.find_network(network)["id"],
        port_id=None if port is None else cli.client.find_port(port)["id"],
        fixed_ip_address=fixed_ip,
        floating_ip_address=address,
        project_id=project_id(cli, project),
        description=description,
    )
    print_item(cli.client.create_floatingip(**attrs), cli.json)


@verb(fip_app, "list", pages=True)
def fip_list(
    cli: Cli,
    port: Annotated[str | None, typer.Option(help="Only this port's floating IPs.")] = None,
) -> None:
    """List floating IPs."""
    filters = {} if port is None else {"port_id": cli.client.find_port(port)["id"]}
    print_list(cli.client.list_floatingips(**filters), FIP_COLUMNS, cli.json)


@verb(fip_app, "show")
def fip_show(cli: Cli, floating_ip: FipRef) -> None:
    """Show one floating IP."""
    print_item(cli.client.find_floatingip(floating_ip), cli.json)


@verb(fip_app, "associate", write=True)
def fip_associate(
    cli: Cli,
    floating_ip: FipRef,
    port: Annotated[str, typer.Argument(help="Port name or id.")],
    fixed_ip: Annotated[str | None, typer.Option(help="Which of the port's addresses.")] = None,
) -> None:
    """Map a floating IP to a port's fixed address."""
    fip = cli.client.find_floatingip(floating_ip)
    attrs = only_set(port_id=cli.client.find_port(port)["id"], fixed_ip_address=fixed_ip)
    print_item(cli.client.update_floatingip(fip["id"], **attrs), cli.json)


@verb(fip_app, "disassociate", write=True)
def fip_disassociate(cli: Cli, floating_ip: FipRef) -> None:
    """Unmap a floating IP (it stays allocated to the project)."""
    fip = cli.client.find_floatingip(floating_ip)
    print_item(cli.client.update_floatingip(fip["id"], port_id=None), cli.json)


@verb(fip_app, "delete", json=False, write=True)
def fip_delete(cli: Cli, floating_ips: Annotated[list[str], typer.Argument()]) -> None:
    """Release floating IPs."""
    for ref in floating_ips:
        fip = cli.client.find_floatingip(ref)
        cli.client.delete_floatingip(fip["id"])
        print_done(f"deleted floating IP {fip['floating_ip_address']} ({fip['id']})")
