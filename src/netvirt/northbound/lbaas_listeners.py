"""Listener service (Octavia v2 ``/v2/lbaas/listeners``).

A listener claims one transport port on its load balancer's VIP. TCP and HTTP
listeners both occupy a TCP port, so they may not share a number (Octavia keys
uniqueness on the protocol name; the datapath cannot tell them apart on the
wire, so netvirt keys it on the transport).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from netvirt.model.lbaas import ListenerCreate, ListenerUpdate
from netvirt.northbound.access import owned_clause, select_visible
from netvirt.northbound.context import Context
from netvirt.northbound.errors import Conflict, not_found
from netvirt.northbound.lbaas_common import (
    TRANSPORT,
    apply,
    check_compatible,
    fetch_lb,
    fetch_listener,
    refs,
    sync_pool_listener,
)
from netvirt.northbound.lbaas_status import recompute
from netvirt.northbound.schema import Listener, LoadBalancer, Pool
from netvirt.northbound.schema.base import standard_fields

UPDATABLE = ("name", "description", "connection_limit", "admin_state_up", "tags")


def to_dict(listener: Listener) -> dict[str, Any]:
    return standard_fields(listener) | {
        "protocol": listener.protocol,
        "protocol_port": listener.protocol_port,
        "connection_limit": listener.connection_limit,
        "default_pool_id": listener.default_pool_id,
        "admin_state_up": listener.admin_state_up,
        "loadbalancers": refs([listener.loadbalancer_id]),
        "l7policies": [],
        "provisioning_status": listener.provisioning_status,
        "operating_status": listener.operating_status,
    }


def _check_port_free(session: Session, lb_id: str, protocol: str, port: int) -> None:
    same_port = session.execute(
        select(Listener.protocol).where(
            Listener.loadbalancer_id == lb_id, Listener.protocol_port == port
        )
    ).scalars()
    if any(TRANSPORT[other] == TRANSPORT[protocol] for other in same_port):
        raise Conflict(
            f"Another listener on load balancer {lb_id} already uses {TRANSPORT[protocol]} "
            f"port {port}.",
            type="DuplicateListenerEntry",
        )


def _default_pool(session: Session, lb: LoadBalancer, pool_id: str, protocol: str) -> Pool:
    """A pool of the same load balancer whose protocol can serve the listener."""
    pool = session.get(Pool, pool_id)
    if pool is None or pool.loadbalancer_id != lb.id:
        raise not_found("pool", pool_id)
    check_compatible(protocol, pool.protocol)
    return pool


def create(session: Session, ctx: Context, req: ListenerCreate) -> dict[str, Any]:
    lb = fetch_lb(session, ctx, req.loadbalancer_id)
    _check_port_free(session, lb.id, req.protocol, req.protocol_port)
    pool = None
    if req.default_pool_id is not None:
        pool = _default_pool(session, lb, req.default_pool_id, req.protocol)
    listener = Listener(
        project_id=lb.project_id,
        loadbalancer_id=lb.id,
        name=req.name,
        description=req.description,
        protocol=req.protocol,
        protocol_port=req.protocol_port,
        default_pool_id=pool.id if pool else None,
        connection_limit=req.connection_limit,
        admin_state_up=req.admin_state_up,
        tags=list(req.tags),
    )
    session.add(listener)
    if pool is not None:
        sync_pool_listener(session, pool)
    recompute(session, lb.id)
    return to_dict(listener)


def get(session: Session, ctx: Context, ident: str) -> dict[str, Any]:
    return to_dict(fetch_listener(session, ctx, ident))


def list_all(session: Session, ctx: Context) -> list[dict[str, Any]]:
    rows = session.execute(select_visible(Listener, owned_clause(ctx, Listener)))
    return [to_dict(row) for row in rows.scalars()]


def _set_default_pool(session: Session, listener: Listener, pool_id: str | None) -> None:
    old = session.get(Pool, listener.default_pool_id) if listener.default_pool_id else None
    new = None
    if pool_id is not None:
        lb = session.get(LoadBalancer, listener.loadbalancer_id)
        assert lb is not None
        new = _default_pool(session, lb, pool_id, listener.protocol)
    listener.default_pool_id = new.id if new else None
    for pool in (old, new):
        if pool is not None:
            sync_pool_listener(session, pool)


def update(session: Session, ctx: Context, ident: str, req: ListenerUpdate) -> dict[str, Any]:
    listener = fetch_listener(session, ctx, ident)
    changes = req.set_fields()
    if "default_pool_id" in changes:
        _set_default_pool(session, listener, changes["default_pool_id"])
    apply(listener, changes, UPDATABLE)
    listener.revision_number += 1
    recompute(session, listener.loadbalancer_id)
    return to_dict(listener)


def delete(session: Session, ctx: Context, ident: str) -> None:
    """Delete a listener; its default pool stays on the load balancer (as in Octavia)."""
    listener = fetch_listener(session, ctx, ident)
    lb_id, pool_id = listener.loadbalancer_id, listener.default_pool_id
    session.delete(listener)
    session.flush()
    pool = session.get(Pool, pool_id) if pool_id else None
    if pool is not None:
        sync_pool_listener(session, pool)
    recompute(session, lb_id)
