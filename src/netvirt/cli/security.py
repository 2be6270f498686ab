"""``netvirt security-group …`` and ``netvirt qos …``.

Security group rules take ``--port 80`` or ``--port 80-90`` and one remote
(``--remote-ip`` or ``--remote-group``); the ethertype follows the remote
prefix when not given, because a rule whose prefix family contradicts its
ethertype is always a mistake. QoS rules are created per policy, as in
Neutron; ``qos delete-rule`` finds the rule's type in the policy itself.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from netvirt.api.client import ApiError, Json
from netvirt.cli.common import (
    Cli,
    Description,
    NameArg,
    ProjectOpt,
    Ref,
    Refs,
    exclusive,
    only_set,
    parse_port_range,
    project_id,
    require_change,
    usage,
    verb,
)
from netvirt.cli.output import RULE_COLUMNS, Column, print_done, print_item, print_list

sg_app = typer.Typer(no_args_is_help=True, help="Security groups and their rules.")
rule_app = typer.Typer(no_args_is_help=True, help="Security group rules.")
sg_app.add_typer(rule_app, name="rule")
qos_app = typer.Typer(no_args_is_help=True, help="QoS policies: bandwidth limits, DSCP marks.")


class Direction(StrEnum):
    ingress = "ingress"
    egress = "egress"


class Ethertype(StrEnum):
    ipv4 = "IPv4"
    ipv6 = "IPv6"


SG_COLUMNS: list[Column] = [
    ("ID", "id"),
    ("Name", "name"),
    ("Rules", lambda g: len(g.get("security_group_rules") or [])),
    ("Stateful", "stateful"),
    ("Description", "description"),
    ("Project", "project_id"),
]
QOS_COLUMNS: list[Column] = [
    ("ID", "id"),
    ("Name", "name"),
    ("Shared", "shared"),
    ("Rules", lambda p: [_rule_summary(r) for r in p.get("rules") or []]),
    ("Project", "project_id"),
]


def _rule_summary(rule: Json) -> str:
    kind = rule.get("type", "")
    if kind == "bandwidth_limit":
        burst = rule.get("max_burst_kbps")
        extra = f" burst {burst}" if burst else ""
        return f"{rule.get('direction', 'egress')} {rule.get('max_kbps')} kbps{extra}"
    if kind == "dscp_marking":
        return f"dscp {rule.get('dscp_mark')}"
    return str(kind)


# ---------------------------------------------------------------------- security groups


@verb(sg_app, "create", write=True)
def sg_create(
    cli: Cli,
    name: NameArg,
    stateless: Annotated[bool, typer.Option(help="No connection tracking.")] = False,
    project: ProjectOpt = None,
    description: Description = None,
) -> None:
    """Create a security group (it starts with the two egress-allow rules)."""
    attrs = only_set(name=name, project_id=project_id(cli, project), description=description)
    if stateless:
        attrs["stateful"] = False
    _show_group(cli, cli.client.create_security_group(**attrs))


@verb(sg_app, "list", pages=True)
def sg_list(cli: Cli, project: ProjectOpt = None) -> None:
    """List security groups."""
    filters = only_set(project_id=project_id(cli, project))
    print_list(cli.client.list_security_groups(**filters), SG_COLUMNS, cli.json)


@verb(sg_app, "show")
def sg_show(cli: Cli, group: Ref) -> None:
    """Show a security group and its rules."""
    _show_group(cli, cli.client.find_security_group(group))


def _show_group(cli: Cli, group: Json) -> None:
    if cli.json:
        print_item(group, True)
        return
    print_item(group, False, hide=["security_group_rules"])
    print_list(group.get("security_group_rules") or [], RULE_COLUMNS, False, title="Rules")


@verb(sg_app, "update", write=True)
def sg_update(
    cli: Cli,
    group: Ref,
    name: Annotated[str | None, typer.Option(help="New name.")] = None,
    description: Description = None,
) -> None:
    """Rename a security group or change its description."""
    found = cli.client.find_security_group(group)
    attrs = require_change(only_set(name=name, description=description))
    _show_group(cli, cli.client.update_security_group(found["id"], **attrs))


@verb(sg_app, "delete", json=False, write=True)
def sg_delete(cli: Cli, groups: Refs) -> None:
    """Delete security groups (no port may use them)."""
    for ref in groups:
        found = cli.client.find_security_group(ref)
        cli.client.delete_security_group(found["id"])
        print_done(f"deleted security group {found['id']}")


@verb(rule_app, "add", write=True)
def rule_add(
    cli: Cli,
    group: Annotated[str, typer.Argument(help="Security group name or id.")],
    direction: Annotated[Direction, typer.Option(help="Traffic direction.")] = Direction.ingress,
    protocol: Annotated[
        str | None, typer.Option(help="tcp, udp, icmp, ipv6-icmp, or a number.")
    ] = None,
    port: Annotated[str | None, typer.Option(help="N or N-M (tcp/udp/sctp).")] = None,
    icmp_type: Annotated[int | None, typer.Option(help="ICMP type.")] = None,
    icmp_code: Annotated[int | None, typer.Option(help="ICMP code.")] = None,
    remote_ip: Annotated[str | None, typer.Option(help="Remote prefix CIDR.")] = None,
    remote_group: Annotated[str | None, typer.Option(help="Remote group name or id.")] = None,
    ethertype: Annotated[Ethertype | None, typer.Option(help="IPv4 or IPv6.")] = None,
    description: Description = None,
) -> None:
    """Add a rule to a security group."""
    exclusive(remote_ip=remote_ip, remote_group=remote_group)
    exclusive(port=port, icmp_type=icmp_type)
    if icmp_code is not None and icmp_type is None:
        raise usage("--icmp-code needs --icmp-type")
    low, high = parse_port_range(port) if port is not None else (icmp_type, icmp_code)
    if ethertype is None and remote_ip is not None and ":" in remote_ip:
        ethertype = Ethertype.ipv6
    found = cli.client.find_security_group(group)
    attrs = only_set(
        security_group_id=found["id"],
        direction=direction.value,
        protocol=protocol,
        port_range_min=low,
        port_range_max=high,
        remote_ip_prefix=remote_ip,
        remote_group_id=(
            None if remote_group is None else cli.client.find_security_group(remote_group)["id"]
        ),
        ethertype=None if ethertype is None else ethertype.value,
        description=description,
    )
    print_item(cli.client.create_security_group_rule(**attrs), cli.json)


@verb(rule_app, "list", pages=True)
def rule_list(
    cli: Cli, group: Annotated[str | None, typer.Argument(help="Only this group.")] = None
) -> None:
    """List security group rules."""
    filters: Json = {}
    if group is not None:
        filters["security_group_id"] = cli.client.find_security_group(group)["id"]
    columns: list[Column] = [*RULE_COLUMNS[:1], ("Group", "security_group_id"), *RULE_COLUMNS[1:]]
    print_list(cli.client.list_security_group_rules(**filters), columns, cli.json)


@verb(rule_app, "show")
def rule_show(cli: Cli, rule: Annotated[str, typer.Argument(help="Rule id.")]) -> None:
    """Show one rule."""
    print_item(cli.client.get_security_group_rule(rule), cli.json)


@verb(rule_app, "delete", json=False, write=True)
def rule_delete(cli: Cli, rules: Annotated[list[str], typer.Argument(help="Rule ids.")]) -> None:
    """Delete rules."""
    for rule in rules:
        cli.client.delete_security_group_rule(rule)
        print_done(f"deleted security group rule {rule}")


# ---------------------------------------------------------------------- QoS

PolicyArg = Annotated[str, typer.Argument(help="QoS policy name or id.")]


@verb(qos_app, "create", write=True)
def qos_create(
    cli: Cli,
    name: NameArg,
    shared: Annotated[bool, typer.Option(help="Usable by every project (admin).")] = False,
    project: ProjectOpt = None,
    description: Description = None,
) -> None:
    """Create a QoS policy (add rules with bandwidth-limit / dscp)."""
    attrs = only_set(name=name, project_id=project_id(cli, project), description=description)
    if shared:
        attrs["shared"] = True
    print_item(cli.client.create_qos_policy(**attrs), cli.json)


@verb(qos_app, "list", pages=True)
def qos_list(cli: Cli) -> None:
    """List QoS policies."""
    print_list(cli.client.list_qos_policies(), QOS_COLUMNS, cli.json)


@verb(qos_app, "show")
def qos_show(cli: Cli, policy: PolicyArg) -> None:
    """Show a QoS policy and its rules."""
    print_item(cli.client.find_qos_policy(policy), cli.json)


@verb(qos_app, "update", write=True)
def qos_update(
    cli: Cli,
    policy: PolicyArg,
    name: Annotated[str | None, typer.Option(help="New name.")] = None,
    description: Description = None,
    shared: Annotated[bool | None, typer.Option("--shared/--no-shared")] = None,
) -> None:
    """Change a QoS policy."""
    found = cli.client.find_qos_policy(policy)
    attrs = require_change(only_set(name=name, description=description, shared=shared))
    print_item(cli.client.update_qos_policy(found["id"], **attrs), cli.json)


@verb(qos_app, "delete", json=False, write=True)
def qos_delete(cli: Cli, policies: Refs) -> None:
    """Delete QoS policies (no port or network may use them)."""
    for ref in policies:
        found = cli.client.find_qos_policy(ref)
        cli.client.delete_qos_policy(found["id"])
        print_done(f"deleted QoS policy {found['id']}")


@verb(qos_app, "bandwidth-limit", write=True)
def qos_bandwidth_limit(
    cli: Cli,
    policy: PolicyArg,
    max_kbps: Annotated[int, typer.Option("--max-kbps", min=0, help="Rate limit.")],
    burst: Annotated[int | None, typer.Option(min=0, help="Burst size in kbit.")] = None,
    direction: Annotated[Direction, typer.Option(help="Seen from the VM.")] = Direction.egress,
) -> None:
    """Add a bandwidth limit rule to a policy."""
    found = cli.client.find_qos_policy(policy)
    attrs = only_set(max_kbps=max_kbps, max_burst_kbps=burst, direction=direction.value)
    print_item(cli.client.create_bandwidth_limit_rule(found["id"], **attrs), cli.json)


@verb(qos_app, "dscp", write=True)
def qos_dscp(
    cli: Cli,
    policy: PolicyArg,
    mark: Annotated[int, typer.Option("--mark", min=0, max=56, help="DSCP value.")],
) -> None:
    """Add a DSCP marking rule to a policy."""
    found = cli.client.find_qos_policy(policy)
    print_item(cli.client.create_dscp_marking_rule(found["id"], dscp_mark=mark), cli.json)


@verb(qos_app, "delete-rule", json=False, write=True)
def qos_delete_rule(
    cli: Cli, policy: PolicyArg, rule: Annotated[str, typer.Argument(help="Rule id.")]
) -> None:
    """Delete one rule of a policy."""
    found = cli.client.find_qos_policy(policy)
    kinds = {r.get("id"): r.get("type") for r in found.get("rules") or []}
    kind = kinds.get(rule)
    if kind == "bandwidth_limit":
        cli.client.delete_bandwidth_limit_rule(found["id"], rule)
    elif kind == "dscp_marking":
        cli.client.delete_dscp_marking_rule(found["id"], rule)
    else:
        raise ApiError(
            404, "QosRuleNotFound", f"QoS rule {rule} could not be found in policy {found['id']}."
        )
    print_done(f"deleted QoS rule {rule}")
