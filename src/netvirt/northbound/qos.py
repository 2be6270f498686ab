"""QoS policy and rule services.

Tenancy: a member sees its own policies and every shared one (so it can
attach a shared policy to its ports and networks), and changes only its own:
another project's shared policy answers 403 on writes, an unshared one 404.
Only admins may share a policy.

Rules are stored in one table with a ``rule_type``; each type has one rule
per policy and direction at most (bandwidth_limit: one per direction,
dscp_marking: one). Any rule change bumps the policy's revision_number, since
the rules are part of the policy's representation.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql import ColumnElement

from netvirt.model.qos import QosPolicyCreate, QosPolicyUpdate
from netvirt.model.types import RequestModel
from netvirt.northbound.access import fetch, select_visible
from netvirt.northbound.context import Context
from netvirt.northbound.errors import Conflict, Forbidden, NotFound, not_found
from netvirt.northbound.schema import Network, Port, QosPolicy, QosRule
from netvirt.northbound.schema.base import new_id, standard_fields

RULE_FIELDS: dict[str, tuple[str, ...]] = {
    "bandwidth_limit": ("max_kbps", "max_burst_kbps", "direction"),
    "dscp_marking": ("dscp_mark",),
}

# --- representation -----------------------------------------------------------


def rule_to_dict(rule: QosRule) -> dict[str, Any]:
    body: dict[str, Any] = {"id": rule.id, "qos_policy_id": rule.policy_id}
    body |= {name: getattr(rule, name) for name in RULE_FIELDS[rule.rule_type]}
    return body | {"type": rule.rule_type}


def _rules_of(session: Session, policy_id: str, kind: str | None = None) -> list[QosRule]:
    stmt = select(QosRule).where(QosRule.policy_id == policy_id)
    if kind is not None:
        stmt = stmt.where(QosRule.rule_type == kind)
    return list(session.execute(stmt.order_by(QosRule.rule_type, QosRule.id)).scalars())


def to_dict(session: Session, policy: QosPolicy) -> dict[str, Any]:
    return standard_fields(policy) | {
        "shared": policy.shared,
        "is_default": policy.is_default,
        "rules": [rule_to_dict(r) for r in _rules_of(session, policy.id)],
    }


# --- access -------------------------------------------------------------------


def _visible_clause(ctx: Context) -> ColumnElement[bool] | None:
    if ctx.is_admin:
        return None
    return or_(QosPolicy.project_id == ctx.project_id, QosPolicy.shared)


def fetch_policy(session: Session, ctx: Context, ident: str, *, write: bool = False) -> QosPolicy:
    policy = fetch(session, QosPolicy, ident, "qos_policy")
    if not (ctx.owns(policy.project_id) or policy.shared):
        raise not_found("qos_policy", ident)
    if write and not ctx.owns(policy.project_id):
        raise Forbidden(f"Project {ctx.project_id} may not change QoS policy {ident}.")
    return policy


# --- policy checks ------------------------------------------------------------


def _check_single_default(session: Session, project_id: str, exclude: str | None) -> None:
    stmt = select(QosPolicy.id).where(QosPolicy.project_id == project_id, QosPolicy.is_default)
    if exclude is not None:
        stmt = stmt.where(QosPolicy.id != exclude)
    if session.execute(stmt).first() is not None:
        raise Conflict(
            f"A default QoS policy exists for project {project_id}.",
            type="QoSPolicyDefaultAlreadyExists",
        )


def _user(session: Session, policy: QosPolicy, *, foreign_only: bool) -> tuple[str, str] | None:
    """The first (kind, id) of a port or network using the policy."""
    for model, kind in ((Port, "port"), (Network, "network")):
        stmt = select(model.id).where(model.qos_policy_id == policy.id)
        if foreign_only:
            stmt = stmt.where(model.project_id != policy.project_id)
        found = session.execute(stmt.order_by(model.id)).scalars().first()
        if found is not None:
            return kind, found
    return None


def _check_unused(session: Session, policy: QosPolicy, *, foreign_only: bool = False) -> None:
    user = _user(session, policy, foreign_only=foreign_only)
    if user is not None:
        raise Conflict(
            f"QoS Policy {policy.id} is used by {user[0]} {user[1]}.", type="QosPolicyInUse"
        )


# --- policies -----------------------------------------------------------------


def create(session: Session, ctx: Context, req: QosPolicyCreate) -> dict[str, Any]:
    if req.shared and not ctx.is_admin:
        raise Forbidden("Only admins may create shared QoS policies.")
    project = ctx.project_for_create(req.project_id or req.tenant_id)
    if req.is_default:
        _check_single_default(session, project, None)
    policy = QosPolicy(
        project_id=project,
        name=req.name,
        description=req.description,
        shared=req.shared,
        is_default=req.is_default,
    )
    session.add(policy)
    session.flush()
    return to_dict(session, policy)


def get(session: Session, ctx: Context, ident: str) -> dict[str, Any]:
    return to_dict(session, fetch_policy(session, ctx, ident))


def list_all(session: Session, ctx: Context) -> list[dict[str, Any]]:
    rows = session.execute(select_visible(QosPolicy, _visible_clause(ctx))).scalars()
    return [to_dict(session, p) for p in rows]


def update(session: Session, ctx: Context, ident: str, req: QosPolicyUpdate) -> dict[str, Any]:
    policy = fetch_policy(session, ctx, ident, write=True)
    changes = {k: v for k, v in req.set_fields().items() if v is not None}
    if "shared" in changes and changes["shared"] != policy.shared:
        if not ctx.is_admin:
            raise Forbidden("Only admins may change the shared attribute of a QoS policy.")
        if not changes["shared"]:
            _check_unused(session, policy, foreign_only=True)
    if changes.get("is_default"):
        _check_single_default(session, policy.project_id, policy.id)
    for key, value in changes.items():
        setattr(policy, key, value)
    policy.revision_number += 1
    session.flush()
    return to_dict(session, policy)


def delete(session: Session, ctx: Context, ident: str) -> None:
    policy = fetch_policy(session, ctx, ident, write=True)
    _check_unused(session, policy)
    for rule in _rules_of(session, policy.id):
        session.delete(rule)
    session.flush()
    session.delete(policy)
    session.flush()


# --- rules --------------------------------------------------------------------


def _rule_not_found(rule_id: str, policy_id: str) -> NotFound:
    return NotFound(
        f"QoS rule {rule_id} for policy {policy_id} could not be found.", type="QosRuleNotFound"
    )


def _fetch_rule(session: Session, policy: QosPolicy, kind: str, rule_id: str) -> QosRule:
    rule = session.get(QosRule, rule_id)
    if rule is None or rule.policy_id != policy.id or rule.rule_type != kind:
        raise _rule_not_found(rule_id, policy.id)
    return rule


def _check_conflict(
    session: Session, policy: QosPolicy, kind: str, values: dict[str, Any], exclude: str | None
) -> None:
    """One rule of a type per policy, per direction for bandwidth limits."""
    for other in _rules_of(session, policy.id, kind):
        if other.id == exclude:
            continue
        if kind == "bandwidth_limit" and other.direction != values["direction"]:
            continue
        raise Conflict(
            f"Rule {kind} conflicts with rule {other.id} which already exists in "
            f"QoS Policy {policy.id}.",
            type="QoSRulesConflict",
        )


def create_rule(
    session: Session, ctx: Context, policy_id: str, kind: str, req: RequestModel
) -> dict[str, Any]:
    policy = fetch_policy(session, ctx, policy_id, write=True)
    values = req.model_dump()
    _check_conflict(session, policy, kind, values, None)
    rule = QosRule(id=new_id(), policy_id=policy.id, rule_type=kind, **values)
    session.add(rule)
    policy.revision_number += 1
    session.flush()
    return rule_to_dict(rule)


def get_rule(
    session: Session, ctx: Context, policy_id: str, kind: str, rule_id: str
) -> dict[str, Any]:
    policy = fetch_policy(session, ctx, policy_id)
    return rule_to_dict(_fetch_rule(session, policy, kind, rule_id))


def list_rules(session: Session, ctx: Context, policy_id: str, kind: str) -> list[dict[str, Any]]:
    policy = fetch_policy(session, ctx, policy_id)
    return [rule_to_dict(r) for r in _rules_of(session, policy.id, kind)]


def update_rule(
    session: Session, ctx: Context, policy_id: str, kind: str, rule_id: str, req: RequestModel
) -> dict[str, Any]:
    policy = fetch_policy(session, ctx, policy_id, write=True)
    rule = _fetch_rule(session, policy, kind, rule_id)
    changes = {k: v for k, v in req.set_fields().items() if v is not None}
    merged = {name: getattr(rule, name) for name in RULE_FIELDS[kind]} | changes
    _check_conflict(session, policy, kind, merged, rule.id)
    for key, value in changes.items():
        setattr(rule, key, value)
    policy.revision_number += 1
    session.flush()
    return rule_to_dict(rule)


def delete_rule(session: Session, ctx: Context, policy_id: str, kind: str, rule_id: str) -> None:
    policy = fetch_policy(session, ctx, policy_id, write=True)
    rule = _fetch_rule(session, policy, kind, rule_id)
    session.delete(rule)
    policy.revision_number += 1
    session.flush()
