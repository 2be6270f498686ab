"""Pool service (Octavia v2 ``/v2/lbaas/pools``).

A pool hangs off a load balancer, and optionally becomes a listener's default
pool: created with ``listener_id`` (the listener must not have one yet), or
later through the listener's ``default_pool_id``. Deleting a pool deletes its
members and health monitor and clears ``default_pool_id`` on the listeners
that used it, as Octavia does.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from netvirt.model.lbaas import PoolCreate, PoolUpdate
from netvirt.northbound.access import owned_clause, select_visible
from netvirt.northbound.context import Context
from netvirt.northbound.errors import Conflict, InvalidInput
from netvirt.northbound.lbaas_common import (
    apply,
    check_compatible,
    fetch_lb,
    fetch_listener,
    fetch_pool,
    listeners_using,
    members_of,
    monitor_of,
    refs,
    sync_pool_listener,
)
from netvirt.northbound.lbaas_status import recompute
from netvirt.northbound.schema import Listener, Pool
from netvirt.northbound.schema.base import standard_fields

UPDATABLE = ("name", "description", "lb_algorithm", "admin_state_up", "tags")


def to_dict(session: Session, pool: Pool) -> dict[str, Any]:
    monitor = monitor_of(session, pool.id)
    return standard_fields(pool) | {
        "protocol": pool.protocol,
        "lb_algorithm": pool.lb_algorithm,
        "session_persistence": pool.session_persistence,
        "admin_state_up": pool.admin_state_up,
        "listeners": refs(lst.id for lst in listeners_using(session, pool.id)),
        "loadbalancers": refs([pool.loadbalancer_id]),
        "members": refs(m.id for m in members_of(session, pool.id)),
        "healthmonitor_id": monitor.id if monitor else None,
        "provisioning_status": pool.provisioning_status,
        "operating_status": pool.operating_status,
        "tls_enabled": False,
    }


def _persistence(value: dict[str, Any] | None, protocol: str) -> dict[str, Any] | None:
    """Stored with every key Octavia returns; UDP-only knobs refused on other pools."""
    if value is None:
        return None
    udp_only = [
        k for k in ("persistence_timeout", "persistence_granularity") if value.get(k) is not None
    ]
    if udp_only and protocol != "UDP":
        raise InvalidInput(
            "session_persistence", f"{', '.join(udp_only)} is only valid for UDP pools"
        )
    return {
        "type": value["type"],
        "cookie_name": None,
        "persistence_timeout": value.get("persistence_timeout"),
        "persistence_granularity": value.get("persistence_granularity"),
    }


def _listener_for(session: Session, ctx: Context, req: PoolCreate) -> Listener | None:
    if req.listener_id is None:
        return None
    listener = fetch_listener(session, ctx, req.listener_id)
    if req.loadbalancer_id is not None and listener.loadbalancer_id != req.loadbalancer_id:
        raise InvalidInput(
            "listener_id",
            f"listener {listener.id} is not on load balancer {req.loadbalancer_id}",
        )
    check_compatible(listener.protocol, req.protocol)
    if listener.default_pool_id is not None:
        raise Conflict(
            f"Listener {listener.id} already has a default pool.", type="DuplicatePoolEntry"
        )
    return listener


def create(session: Session, ctx: Context, req: PoolCreate) -> dict[str, Any]:
    listener = _listener_for(session, ctx, req)
    lb_id = listener.loadbalancer_id if listener else req.loadbalancer_id
    assert lb_id is not None  # the model requires one of the two
    lb = fetch_lb(session, ctx, lb_id)
    persistence = None
    if req.session_persistence is not None:
        persistence = _persistence(req.session_persistence.model_dump(), req.protocol)
    pool = Pool(
        project_id=lb.project_id,
        loadbalancer_id=lb.id,
        name=req.name,
        description=req.description,
        protocol=req.protocol,
        lb_algorithm=req.lb_algorithm,
        session_persistence=persistence,
        admin_state_up=req.admin_state_up,
        tags=list(req.tags),
    )
    session.add(pool)
    session.flush()
    if listener is not None:
        listener.default_pool_id = pool.id
        listener.revision_number += 1
        sync_pool_listener(session, pool)
    recompute(session, lb.id)
    return to_dict(session, pool)


def get(session: Session, ctx: Context, ident: str) -> dict[str, Any]:
    return to_dict(session, fetch_pool(session, ctx, ident))


def list_all(session: Session, ctx: Context) -> list[dict[str, Any]]:
    rows = session.execute(select_visible(Pool, owned_clause(ctx, Pool)))
    return [to_dict(session, row) for row in rows.scalars()]


def update(session: Session, ctx: Context, ident: str, req: PoolUpdate) -> dict[str, Any]:
    pool = fetch_pool(session, ctx, ident)
    changes = req.set_fields()
    if "session_persistence" in changes:
        pool.session_persistence = _persistence(changes["session_persistence"], pool.protocol)
    apply(pool, changes, UPDATABLE)
    pool.revision_number += 1
    recompute(session, pool.loadbalancer_id)
    return to_dict(session, pool)


def delete(session: Session, ctx: Context, ident: str) -> None:
    pool = fetch_pool(session, ctx, ident)
    for listener in listeners_using(session, pool.id):
        listener.default_pool_id = None
        listener.revision_number += 1
    monitor = monitor_of(session, pool.id)
    for row in [*members_of(session, pool.id), *([monitor] if monitor else [])]:
        session.delete(row)
    session.flush()
    lb_id = pool.loadbalancer_id
    session.delete(pool)
    recompute(session, lb_id)
