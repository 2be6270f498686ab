"""Security group and security group rule services.

Behaviour follows Neutron's:

* every project has one ``default`` group (``default_sg.py``), created when the
  project is, lazily again when its members list groups or rules, and before
  any other group of the project is created;
* the default group cannot be renamed, and only an admin may delete it;
  no other group may be called ``default``;
* a new group starts with "allow all egress" rules for IPv4 and IPv6;
* a group used by a port cannot be deleted; deleting a group deletes the
  rules of other groups that name it as ``remote_group_id`` (Neutron's
  foreign key cascades the same way), bumping those groups' revisions;
* rules are immutable (create, show, list, delete); a rule's project is its
  group's project, and adding or removing one bumps the group's revision;
* two rules are duplicates when everything but the description matches, with
  protocols compared by number and ``0.0.0.0/0`` / ``::/0`` equal to "any".
"""

from __future__ import annotations

import ipaddress
from typing import Any

from sqlalchemy import delete as sql_delete
from sqlalchemy import select
from sqlalchemy.orm import Session

from netvirt.model.security import (
    ICMP_PROTOCOLS,
    IPV4_ONLY_PROTOCOLS,
    IPV6_ONLY_PROTOCOLS,
    PORT_PROTOCOLS,
    SecurityGroupCreate,
    SecurityGroupRuleCreate,
    SecurityGroupUpdate,
    protocol_number,
)
from netvirt.northbound.access import fetch_owned, owned_clause, select_visible
from netvirt.northbound.context import Context
from netvirt.northbound.default_sg import ensure_default_security_group
from netvirt.northbound.errors import BadRequest, Conflict, InvalidInput, not_found
from netvirt.northbound.schema import PortSecurityGroup, SecurityGroup, SecurityGroupRule
from netvirt.northbound.schema.base import standard_fields

DEFAULT_NAME = "default"
ANY_PREFIXES = ("0.0.0.0/0", "::/0")

# --- representation -----------------------------------------------------------


def rule_to_dict(rule: SecurityGroupRule, *, in_default: bool = False) -> dict[str, Any]:
    body = standard_fields(rule)
    del body["name"]  # rules have no name in Neutron
    return body | {
        "security_group_id": rule.security_group_id,
        "direction": rule.direction,
        "ethertype": rule.ethertype,
        "protocol": rule.protocol,
        "port_range_min": rule.port_range_min,
        "port_range_max": rule.port_range_max,
        "remote_ip_prefix": rule.remote_ip_prefix,
        "normalized_cidr": rule.remote_ip_prefix,
        "remote_group_id": rule.remote_group_id,
        "remote_address_group_id": None,
        "belongs_to_default_sg": in_default,
    }


def group_to_dict(group: SecurityGroup, rules: list[SecurityGroupRule]) -> dict[str, Any]:
    return standard_fields(group) | {
        "stateful": group.stateful,
        "shared": False,
        "security_group_rules": [rule_to_dict(r, in_default=group.is_default) for r in rules],
    }


def _rules_of(session: Session, group_id: str) -> list[SecurityGroupRule]:
    stmt = (
        select(SecurityGroupRule)
        .where(SecurityGroupRule.security_group_id == group_id)
        .order_by(SecurityGroupRule.created_at, SecurityGroupRule.id)
    )
    return list(session.execute(stmt).scalars())


def _to_dict(session: Session, group: SecurityGroup) -> dict[str, Any]:
    return group_to_dict(group, _rules_of(session, group.id))


# --- default group ------------------------------------------------------------


def has_default(session: Session, project_id: str) -> bool:
    """Cheap read-side check, so listing only opens a write when a default is missing."""
    stmt = select(SecurityGroup.id).where(
        SecurityGroup.project_id == project_id, SecurityGroup.is_default
    )
    return session.execute(stmt).first() is not None


# --- security groups ----------------------------------------------------------


def fetch_group(session: Session, ctx: Context, ident: str) -> SecurityGroup:
    return fetch_owned(session, ctx, SecurityGroup, ident, "security_group")


def _default_exists_error() -> Conflict:
    return Conflict(
        "Default security group already exists.", type="SecurityGroupDefaultAlreadyExists"
    )


def _ports_using(session: Session, group_id: str) -> bool:
    stmt = select(PortSecurityGroup.port_id).where(PortSecurityGroup.security_group_id == group_id)
    return session.execute(stmt).first() is not None


def _in_use_error(group_id: str) -> Conflict:
    return Conflict(f"Security Group {group_id} in use.", type="SecurityGroupInUse")


def create(session: Session, ctx: Context, req: SecurityGroupCreate) -> dict[str, Any]:
    project = ctx.project_for_create(req.project_id or req.tenant_id)
    if req.name == DEFAULT_NAME:
        raise _default_exists_error()
    ensure_default_security_group(session, project)
    group = SecurityGroup(
        project_id=project, name=req.name, description=req.description, stateful=req.stateful
    )
    session.add(group)
    session.flush()
    for ethertype in ("IPv4", "IPv6"):
        session.add(
            SecurityGroupRule(
                project_id=project,
                security_group_id=group.id,
                direction="egress",
                ethertype=ethertype,
            )
        )
    session.flush()
    return _to_dict(session, group)


def get(session: Session, ctx: Context, ident: str) -> dict[str, Any]:
    return _to_dict(session, fetch_group(session, ctx, ident))


def list_all(session: Session, ctx: Context) -> list[dict[str, Any]]:
    clause = owned_clause(ctx, SecurityGroup)
    groups = list(session.execute(select_visible(SecurityGroup, clause)).scalars())
    stmt = (
        select(SecurityGroupRule)
        .join(SecurityGroup, SecurityGroupRule.security_group_id == SecurityGroup.id)
        .order_by(SecurityGroupRule.created_at, SecurityGroupRule.id)
    )
    if clause is not None:
        stmt = stmt.where(clause)
    by_group: dict[str, list[SecurityGroupRule]] = {g.id: [] for g in groups}
    for rule in session.execute(stmt).scalars():
        by_group.setdefault(rule.security_group_id, []).append(rule)
    return [group_to_dict(g, by_group[g.id]) for g in groups]


def update(session: Session, ctx: Context, ident: str, req: SecurityGroupUpdate) -> dict[str, Any]:
    group = fetch_group(session, ctx, ident)
    changes = {k: v for k, v in req.set_fields().items() if v is not None}
    new_name = changes.get("name")
    if new_name is not None and new_name != group.name:
        if group.is_default:
            raise Conflict(
                "Updating default security group not allowed.",
                type="SecurityGroupCannotUpdateDefault",
            )
        if new_name == DEFAULT_NAME:
            raise _default_exists_error()
    stateful = changes.get("stateful")
    if stateful is not None and stateful != group.stateful and _ports_using(session, group.id):
        raise _in_use_error(group.id)
    for key, value in changes.items():
        setattr(group, key, value)
    group.revision_number += 1
    session.flush()
    return _to_dict(session, group)


def delete(session: Session, ctx: Context, ident: str) -> None:
    group = fetch_group(session, ctx, ident)
    if group.is_default and not ctx.is_admin:
        raise Conflict(
            "Insufficient rights for removing default security group.",
            type="SecurityGroupCannotRemoveDefault",
        )
    if _ports_using(session, group.id):
        raise _in_use_error(group.id)
    _drop_rules_referencing(session, group.id)
    session.execute(
        sql_delete(SecurityGroupRule).where(SecurityGroupRule.security_group_id == group.id)
    )
    session.delete(group)
    session.flush()


def _drop_rules_referencing(session: Session, group_id: str) -> None:
    """Delete other groups' rules whose remote group is ``group_id`` (Neutron's cascade)."""
    stmt = select(SecurityGroupRule).where(
        SecurityGroupRule.remote_group_id == group_id,
        SecurityGroupRule.security_group_id != group_id,
    )
    touched: set[str] = set()
    for rule in session.execute(stmt).scalars():
        touched.add(rule.security_group_id)
        session.delete(rule)
    for other_id in sorted(touched):
        other = session.get(SecurityGroup, other_id)
        if other is not None:
            other.revision_number += 1
    session.flush()


# --- rule validation ----------------------------------------------------------


def _check_port_range(protocol: str | None, low: int | None, high: int | None) -> None:
    """Ports only for protocols that have them; ICMP reuses the fields as type/code."""
    if low is None and high is None:
        return
    if protocol is None:
        raise BadRequest(
            "Must also specify protocol if port range is given.",
            type="SecurityGroupProtocolRequiredWithPorts",
        )
    number = protocol_number(protocol)
    if number in PORT_PROTOCOLS:
        if low == 0 or high == 0:
            raise BadRequest("Invalid value for port 0.", type="SecurityGroupInvalidPortValue")
        if low is None or high is None or low > high:
            raise BadRequest(
                "For TCP/UDP protocols, port_range_min must be <= port_range_max.",
                type="SecurityGroupInvalidPortRange",
            )
    elif number in ICMP_PROTOCOLS:
        _check_icmp(low, high)
    else:
        raise BadRequest(
            f"Invalid protocol {protocol} for port range, only supported for "
            "TCP, UDP, UDPLITE, SCTP and DCCP.",
            type="SecurityGroupInvalidProtocolForPort",
        )


def _check_icmp(icmp_type: int | None, code: int | None) -> None:
    for value, field, attr in (
        (icmp_type, "type", "port_range_min"),
        (code, "code", "port_range_max"),
    ):
        if value is not None and not 0 <= value <= 255:
            raise BadRequest(
                f"Invalid value for ICMP {field} ({attr}) {value}. It must be 0 to 255.",
                type="SecurityGroupInvalidIcmpValue",
            )
    if icmp_type is None and code is not None:
        raise BadRequest(
            f"ICMP code (port-range-max) {code} is provided but ICMP type "
            "(port-range-min) is missing.",
            type="SecurityGroupMissingIcmpType",
        )


def _check_ethertype(req: SecurityGroupRuleCreate) -> None:
    number = protocol_number(req.protocol)
    wrong_family = IPV6_ONLY_PROTOCOLS if req.ethertype == "IPv4" else IPV4_ONLY_PROTOCOLS
    if number in wrong_family:
        raise BadRequest(
            f"Invalid ethertype {req.ethertype} for protocol {req.protocol}.",
            type="SecurityGroupEthertypeConflictWithProtocol",
        )
    prefix = req.remote_ip_prefix
    if prefix is not None and f"IPv{ipaddress.ip_network(prefix).version}" != req.ethertype:
        raise BadRequest(
            f"Conflicting value ethertype {req.ethertype} for CIDR {prefix}",
            type="SecurityGroupRuleParameterConflict",
        )


def _check_remote_group(
    session: Session, group: SecurityGroup, remote_group_id: str | None
) -> None:
    """The remote group must exist in the rule's own project (else it is not found)."""
    if remote_group_id is None or remote_group_id == group.id:
        return
    remote = session.get(SecurityGroup, remote_group_id)
    if remote is None or remote.project_id != group.project_id:
        raise not_found("security_group", remote_group_id)


def _rule_key(
    rule: SecurityGroupRule | SecurityGroupRuleCreate,
) -> tuple[object, ...]:
    prefix = rule.remote_ip_prefix
    return (
        rule.direction,
        rule.ethertype,
        protocol_number(rule.protocol),
        rule.port_range_min,
        rule.port_range_max,
        None if prefix in ANY_PREFIXES else prefix,
        rule.remote_group_id,
    )


def _check_duplicate(session: Session, group_id: str, req: SecurityGroupRuleCreate) -> None:
    wanted = _rule_key(req)
    for existing in _rules_of(session, group_id):
        if _rule_key(existing) == wanted:
            raise Conflict(
                f"Security group rule already exists. Rule id is {existing.id}.",
                type="SecurityGroupRuleExists",
            )


def _rule_project(ctx: Context, group: SecurityGroup, req: SecurityGroupRuleCreate) -> str:
    requested = req.project_id or req.tenant_id
    if requested is None:
        return group.project_id
    project = ctx.project_for_create(requested)
    if project != group.project_id:
        raise InvalidInput("project_id", "a rule belongs to the project of its security group")
    return project


# --- security group rules -----------------------------------------------------


def fetch_rule(session: Session, ctx: Context, ident: str) -> SecurityGroupRule:
    return fetch_owned(session, ctx, SecurityGroupRule, ident, "security_group_rule")


def _rule_dict(session: Session, rule: SecurityGroupRule) -> dict[str, Any]:
    group = session.get(SecurityGroup, rule.security_group_id)
    return rule_to_dict(rule, in_default=group is not None and group.is_default)


def create_rule(session: Session, ctx: Context, req: SecurityGroupRuleCreate) -> dict[str, Any]:
    group = fetch_group(session, ctx, req.security_group_id)
    project = _rule_project(ctx, group, req)
    _check_port_range(req.protocol, req.port_range_min, req.port_range_max)
    _check_ethertype(req)
    if req.remote_ip_prefix is not None and req.remote_group_id is not None:
        raise BadRequest(
            "Only remote_ip_prefix or remote_group_id may be provided.",
            type="SecurityGroupRemoteGroupAndRemoteIpPrefix",
        )
    _check_remote_group(session, group, req.remote_group_id)
    _check_duplicate(session, group.id, req)
    rule = SecurityGroupRule(
        project_id=project,
        security_group_id=group.id,
        direction=req.direction,
        ethertype=req.ethertype,
        protocol=req.protocol,
        port_range_min=req.port_range_min,
        port_range_max=req.port_range_max,
        remote_ip_prefix=req.remote_ip_prefix,
        remote_group_id=req.remote_group_id,
        description=req.description,
    )
    session.add(rule)
    group.revision_number += 1
    session.flush()
    return rule_to_dict(rule, in_default=group.is_default)


def get_rule(session: Session, ctx: Context, ident: str) -> dict[str, Any]:
    return _rule_dict(session, fetch_rule(session, ctx, ident))


def list_rules(session: Session, ctx: Context) -> list[dict[str, Any]]:
    stmt = select(SecurityGroupRule, SecurityGroup.is_default).join(
        SecurityGroup, SecurityGroupRule.security_group_id == SecurityGroup.id
    )
    clause = owned_clause(ctx, SecurityGroup)
    if clause is not None:
        stmt = stmt.where(clause)
    stmt = stmt.order_by(SecurityGroupRule.id)
    return [rule_to_dict(rule, in_default=d) for rule, d in session.execute(stmt)]


def delete_rule(session: Session, ctx: Context, ident: str) -> None:
    rule = fetch_rule(session, ctx, ident)
    group = session.get(SecurityGroup, rule.security_group_id)
    if group is not None:
        group.revision_number += 1
    session.delete(rule)
    session.flush()
