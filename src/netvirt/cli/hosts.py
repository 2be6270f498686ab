"""``netvirt host list|show`` (admin) and ``netvirt port counters PORT``.

Hosts are what agents report through the southbound API: liveness from their
heartbeat, the generation they installed, and their datapath's counters.
``port counters`` lives on the ``port`` group (it is about a port) but is
registered here, next to the other counter views.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from netvirt.api.client import Json
from netvirt.cli.common import Cli, Ref, verb
from netvirt.cli.output import Column, print_item, print_json, print_list
from netvirt.cli.resources import port_app
from netvirt.dataplane.drops import DropReason

host_app = typer.Typer(
    no_args_is_help=True, help="Hosts (chassis): liveness, installed generation, counters."
)

HostArg = Annotated[str, typer.Argument(help="Chassis name of the host.")]


def _drop_total(item: Json) -> int:
    return sum(int(n) for n in (item.get("drops") or {}).values())


HOST_COLUMNS: list[Column] = [
    ("Name", "name"),
    ("State", "state"),
    ("Encap", "encap"),
    ("Underlay IP", "underlay_ip"),
    ("Installed", "installed_generation"),
    ("Last seen", "last_seen"),
    ("Ports", lambda h: len(h.get("ports") or [])),
    ("Drops", _drop_total),
]
COUNTER_COLUMNS: list[Column] = [
    ("RX packets", "rx_packets"),
    ("RX bytes", "rx_bytes"),
    ("TX packets", "tx_packets"),
    ("TX bytes", "tx_bytes"),
    ("TX errors", "tx_errors"),
    ("Drops", _drop_total),
]
PORT_COLUMNS: list[Column] = [("Interface", "interface"), ("Port", "port_id"), *COUNTER_COLUMNS]
DROP_COLUMNS: list[Column] = [("Reason", "reason"), ("Count", "count"), ("Meaning", "meaning")]


def _meaning(reason: str) -> str:
    try:
        return DropReason(reason).description
    except ValueError:  # a reason newer than this CLI
        return ""


def drop_rows(drops: dict[str, Any]) -> list[Json]:
    """Drops by reason as table rows, most frequent first."""
    ordered = sorted(drops.items(), key=lambda item: (-int(item[1]), item[0]))
    return [{"reason": r, "count": n, "meaning": _meaning(r)} for r, n in ordered]


@verb(host_app, "list")
def host_list(cli: Cli) -> None:
    """Every known host: state (UP, LAGGING, DOWN), last heartbeat, generation (admin)."""
    print_list(cli.client.list_hosts(), HOST_COLUMNS, cli.json)


@verb(host_app, "show")
def host_show(cli: Cli, name: HostArg) -> None:
    """One host: heartbeat, generations, per-port and tunnel counters, drops (admin)."""
    host = cli.client.get_host(name)
    if cli.json:
        print_json(host)
        return
    print_item(host, False, hide=["ports", "tunnel", "drops", "flows"])
    print_list(host.get("ports") or [], PORT_COLUMNS, False, title="Ports")
    print_list([host.get("tunnel") or {}], COUNTER_COLUMNS, False, title="Tunnel")
    print_list(drop_rows(host.get("drops") or {}), DROP_COLUMNS, False, title="Drops")


@verb(port_app, "counters")
def port_counters(cli: Cli, port: Ref) -> None:
    """A port's packets, bytes and drops by reason, as its host last reported them."""
    counters = cli.client.port_counters(str(cli.client.find_port(port)["id"]))
    if cli.json:
        print_json(counters)
        return
    print_item(counters, False, hide=["drops"])
    if counters.get("host") is None:
        typer.echo("No host reports this port yet (not plugged, or its agent is not running).")
    print_list(drop_rows(counters.get("drops") or {}), DROP_COLUMNS, False, title="Drops")
