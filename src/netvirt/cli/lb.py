"""``netvirt lb …``: load balancers in Octavia v2's shape.

A load balancer has listeners (protocol + port on the VIP), a listener has a
default pool (algorithm + members) and a pool has at most one health monitor.
Octavia reports parents as lists of ``{"id": …}`` (``loadbalancers``,
``listeners``, ``pools``) as well as, on requests, a single ``*_id``; the
helpers below accept either so the table shows the parent whichever the
server sent, and filtering by parent is done here rather than relying on a
server-side filter on a field the representation may not carry.
"""

from __future__ import annotations

from typing import Annotated, Any

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
    usage,
    verb,
)
from netvirt.cli.output import Column, print_done, print_item, print_list

lb_app = typer.Typer(no_args_is_help=True, help="Load balancers (Octavia v2 shape).")
listener_app = typer.Typer(no_args_is_help=True, help="Listeners: protocol and port on a VIP.")
pool_app = typer.Typer(no_args_is_help=True, help="Pools: algorithm and members.")
member_app = typer.Typer(no_args_is_help=True, help="Pool members (backends).")
hm_app = typer.Typer(no_args_is_help=True, help="Health monitors (one per pool).")
lb_app.add_typer(listener_app, name="listener")
lb_app.add_typer(pool_app, name="pool")
lb_app.add_typer(member_app, name="member")
lb_app.add_typer(hm_app, name="healthmonitor")


def parent(item: Json, key: str) -> str | None:
    """The parent id from ``<key>_id`` or the first of ``<key>s: [{"id"}]``."""
    if item.get(f"{key}_id"):
        return str(item[f"{key}_id"])
    refs: list[Any] = item.get(f"{key}s") or []
    return str(refs[0]["id"]) if refs and isinstance(refs[0], dict) else None


def _ids(items: list[Json] | None) -> list[str]:
    return [str(i.get("id")) for i in items or []]


LB_COLUMNS: list[Column] = [
    ("ID", "id"),
    ("Name", "name"),
    ("VIP", "vip_address"),
    ("Subnet", "vip_subnet_id"),
    ("Listeners", lambda lb: _ids(lb.get("listeners"))),
    ("Provisioning", "provisioning_status"),
    ("Operating", "operating_status"),
]
LISTENER_COLUMNS: list[Column] = [
    ("ID", "id"),
    ("Name", "name"),
    ("Load balancer", lambda x: parent(x, "loadbalancer")),
    ("Protocol", "protocol"),
    ("Port", "protocol_port"),
    ("Default pool", "default_pool_id"),
    ("Provisioning", "provisioning_status"),
]
POOL_COLUMNS: list[Column] = [
    ("ID", "id"),
    ("Name", "name"),
    ("Listener", lambda x: parent(x, "listener")),
    ("Protocol", "protocol"),
    ("Algorithm", "lb_algorithm"),
    ("Members", lambda p: len(p.get("members") or [])),
    ("Health monitor", "healthmonitor_id"),
]
MEMBER_COLUMNS: list[Column] = [
    ("ID", "id"),
    ("Name", "name"),
    ("Address", "address"),
    ("Port", "protocol_port"),
    ("Weight", "weight"),
    ("Subnet", "subnet_id"),
    ("Operating", "operating_status"),
]
HM_COLUMNS: list[Column] = [
    ("ID", "id"),
    ("Name", "name"),
    ("Pool", lambda x: parent(x, "pool")),
    ("Type", "type"),
    ("Delay", "delay"),
    ("Timeout", "timeout"),
    ("Retries", "max_retries"),
    ("Operating", "operating_status"),
]
NameOpt = Annotated[str | None, typer.Option("--name", help="Name.")]
PoolArg = Annotated[str, typer.Argument(help="Pool name or id.")]


# ---------------------------------------------------------------------- load balancers


@verb(lb_app, "create", write=True)
def lb_create(
    cli: Cli,
    name: NameArg,
    subnet: Annotated[str, typer.Option("--subnet", help="VIP subnet name or id.")],
    vip_address: Annotated[str | None, typer.Option(help="Ask for this VIP.")] = None,
    project: ProjectOpt = None,
    description: Description = None,
) -> None:
    """Create a load balancer with a VIP on a subnet."""
    attrs = only_set(
        name=name,
        vip_subnet_id=cli.client.find_subnet(subnet)["id"],
        vip_address=vip_address,
        project_id=project_id(cli, project),
        description=description,
    )
    print_item(cli.client.create_loadbalancer(**attrs), cli.json)


@verb(lb_app, "list", pages=True)
def lb_list(cli: Cli) -> None:
    """List load balancers."""
    print_list(cli.client.list_loadbalancers(), LB_COLUMNS, cli.json)


@verb(lb_app, "show")
def lb_show(cli: Cli, loadbalancer: Ref) -> None:
    """Show one load balancer."""
    print_item(cli.client.find_loadbalancer(loadbalancer), cli.json)


@verb(lb_app, "delete", json=False, write=True)
def lb_delete(
    cli: Cli,
    loadbalancers: Refs,
    cascade: Annotated[
        bool, typer.Option(help="Delete its listeners, pools, members too.")
    ] = False,
) -> None:
    """Delete load balancers."""
    for ref in loadbalancers:
        found = cli.client.find_loadbalancer(ref)
        cli.client.delete_loadbalancer(found["id"], cascade=cascade)
        print_done(f"deleted load balancer {found['id']}")


# ---------------------------------------------------------------------- listeners


@verb(listener_app, "create", write=True)
def listener_create(
    cli: Cli,
    loadbalancer: Annotated[str, typer.Argument(help="Load balancer name or id.")],
    protocol: Annotated[str, typer.Option(help="TCP, UDP or HTTP.")],
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port on the VIP.")],
    name: NameOpt = None,
    connection_limit: Annotated[int | None, typer.Option(help="-1 = unlimited.")] = None,
    description: Description = None,
) -> None:
    """Create a listener on a load balancer's VIP."""
    attrs = only_set(
        loadbalancer_id=cli.client.find_loadbalancer(loadbalancer)["id"],
        protocol=protocol.upper(),
        protocol_port=port,
        name=name,
        connection_limit=connection_limit,
        description=description,
    )
    print_item(cli.client.create_listener(**attrs), cli.json)


@verb(listener_app, "list", pages=True)
def listener_list(
    cli: Cli,
    loadbalancer: Annotated[str | None, typer.Option(help="Only this load balancer's.")] = None,
) -> None:
    """List listeners."""
    items = cli.client.list_listeners()
    if loadbalancer is not None:
        lb_id = cli.client.find_loadbalancer(loadbalancer)["id"]
        items = [i for i in items if parent(i, "loadbalancer") == lb_id]
    print_list(items, LISTENER_COLUMNS, cli.json)


@verb(listener_app, "show")
def listener_show(cli: Cli, listener: Ref) -> None:
    """Show one listener."""
    print_item(cli.client.find_listener(listener), cli.json)


@verb(listener_app, "delete", json=False, write=True)
def listener_delete(cli: Cli, listeners: Refs) -> None:
    """Delete listeners."""
    for ref in listeners:
        found = cli.client.find_listener(ref)
        cli.client.delete_listener(found["id"])
        print_done(f"deleted listener {found['id']}")


# ---------------------------------------------------------------------- pools


@verb(pool_app, "create", write=True)
def pool_create(
    cli: Cli,
    algorithm: Annotated[str, typer.Option(help="ROUND_ROBIN, LEAST_CONNECTIONS or SOURCE_IP.")],
    listener: Annotated[
        str | None, typer.Option(help="Listener (the pool becomes its default).")
    ] = None,
    loadbalancer: Annotated[
        str | None, typer.Option(help="Load balancer, for a pool without listener.")
    ] = None,
    protocol: Annotated[
        str | None, typer.Option(help="TCP, UDP or HTTP; default: the listener's.")
    ] = None,
    name: NameOpt = None,
    description: Description = None,
) -> None:
    """Create a pool for a listener (or a load balancer)."""
    exclusive(listener=listener, loadbalancer=loadbalancer)
    attrs = only_set(lb_algorithm=algorithm.upper(), name=name, description=description)
    if listener is not None:
        found = cli.client.find_listener(listener)
        attrs["listener_id"] = found["id"]
        attrs["protocol"] = protocol.upper() if protocol else found["protocol"]
    elif loadbalancer is not None:
        if protocol is None:
            raise usage("--protocol is needed with --loadbalancer")
        attrs["loadbalancer_id"] = cli.client.find_loadbalancer(loadbalancer)["id"]
        attrs["protocol"] = protocol.upper()
    else:
        raise usage("give --listener or --loadbalancer")
    print_item(cli.client.create_pool(**attrs), cli.json)


@verb(pool_app, "list", pages=True)
def pool_list(cli: Cli) -> None:
    """List pools."""
    print_list(cli.client.list_pools(), POOL_COLUMNS, cli.json)


@verb(pool_app, "show")
def pool_show(cli: Cli, pool: PoolArg) -> None:
    """Show one pool."""
    print_item(cli.client.find_pool(pool), cli.json)


@verb(pool_app, "delete", json=False, write=True)
def pool_delete(cli: Cli, pools: Refs) -> None:
    """Delete pools (and their members and monitor)."""
    for ref in pools:
        found = cli.client.find_pool(ref)
        cli.client.delete_pool(found["id"])
        print_done(f"deleted pool {found['id']}")


# ---------------------------------------------------------------------- members


@verb(member_app, "add", write=True)
def member_add(
    cli: Cli,
    pool: PoolArg,
    address: Annotated[str, typer.Option("--address", help="Backend IP address.")],
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Backend port.")],
    subnet: Annotated[str | None, typer.Option(help="Subnet of the address.")] = None,
    weight: Annotated[int | None, typer.Option(min=0, max=256, help="Relative weight.")] = None,
    backup: Annotated[bool, typer.Option(help="Only used when all others are down.")] = False,
    name: NameOpt = None,
) -> None:
    """Add a backend to a pool."""
    found = cli.client.find_pool(pool)
    attrs = only_set(
        address=address,
        protocol_port=port,
        subnet_id=None if subnet is None else cli.client.find_subnet(subnet)["id"],
        weight=weight,
        name=name,
    )
    if backup:
        attrs["backup"] = True
    print_item(cli.client.create_member(found["id"], **attrs), cli.json)


@verb(member_app, "list", pages=True)
def member_list(cli: Cli, pool: PoolArg) -> None:
    """List a pool's members."""
    found = cli.client.find_pool(pool)
    print_list(cli.client.list_members(found["id"]), MEMBER_COLUMNS, cli.json)


@verb(member_app, "show")
def member_show(cli: Cli, pool: PoolArg, member: Ref) -> None:
    """Show one member."""
    found = cli.client.find_pool(pool)
    print_item(cli.client.find_member(found["id"], member), cli.json)


@verb(member_app, "remove", json=False, write=True)
def member_remove(cli: Cli, pool: PoolArg, members: Refs) -> None:
    """Remove members from a pool."""
    found = cli.client.find_pool(pool)
    for ref in members:
        member = cli.client.find_member(found["id"], ref)
        cli.client.delete_member(found["id"], member["id"])
        print_done(f"removed member {member['id']}")


# ---------------------------------------------------------------------- health monitors


@verb(hm_app, "create", write=True)
def hm_create(
    cli: Cli,
    pool: PoolArg,
    type: Annotated[str, typer.Option("--type", help="PING, TCP or HTTP.")],
    delay: Annotated[int, typer.Option(min=1, help="Seconds between probes.")],
    timeout: Annotated[int, typer.Option(min=1, help="Seconds to wait for an answer.")],
    retries: Annotated[int, typer.Option(min=1, max=10, help="Successes to go ONLINE.")],
    retries_down: Annotated[
        int | None, typer.Option(min=1, max=10, help="Failures to go ERROR.")
    ] = None,
    url_path: Annotated[str | None, typer.Option(help="HTTP path probed.")] = None,
    http_method: Annotated[str | None, typer.Option(help="HTTP method.")] = None,
    expected_codes: Annotated[str | None, typer.Option(help="e.g. 200 or 200-204.")] = None,
    name: NameOpt = None,
) -> None:
    """Create a pool's health monitor."""
    attrs = only_set(
        pool_id=cli.client.find_pool(pool)["id"],
        type=type.upper(),
        delay=delay,
        timeout=timeout,
        max_retries=retries,
        max_retries_down=retries_down,
        url_path=url_path,
        http_method=None if http_method is None else http_method.upper(),
        expected_codes=expected_codes,
        name=name,
    )
    print_item(cli.client.create_healthmonitor(**attrs), cli.json)


@verb(hm_app, "list", pages=True)
def hm_list(cli: Cli) -> None:
    """List health monitors."""
    print_list(cli.client.list_healthmonitors(), HM_COLUMNS, cli.json)


@verb(hm_app, "show")
def hm_show(cli: Cli, monitor: Ref) -> None:
    """Show one health monitor."""
    print_item(cli.client.find_healthmonitor(monitor), cli.json)


@verb(hm_app, "delete", json=False, write=True)
def hm_delete(cli: Cli, monitors: Refs) -> None:
    """Delete health monitors."""
    for ref in monitors:
        found = cli.client.find_healthmonitor(ref)
        cli.client.delete_healthmonitor(found["id"])
        print_done(f"deleted health monitor {found['id']}")
