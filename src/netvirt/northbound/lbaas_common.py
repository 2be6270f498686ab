"""Pieces shared by the LBaaS services: statuses, tenancy-aware fetchers, protocol rules.

Every object under a load balancer belongs to the load balancer's project (as
in Octavia), so one ownership test on the object itself answers tenancy for
the whole tree: another project's listener, pool, member or monitor is
reported exactly like a missing one (404).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from netvirt.northbound.access import fetch_owned
from netvirt.northbound.context import Context
from netvirt.northbound.errors import BadRequest, not_found
from netvirt.northbound.schema import HealthMonitor, Listener, LoadBalancer, Member, Pool

ACTIVE = "ACTIVE"
ONLINE = "ONLINE"
OFFLINE = "OFFLINE"
DEGRADED = "DEGRADED"
ERROR = "ERROR"
NO_MONITOR = "NO_MONITOR"

# Which pool protocols a listener protocol can forward to (a subset of Octavia's table,
# restricted to what netvirt implements). TCP listeners pass bytes through, so an HTTP
# pool behind them is fine; an HTTP listener needs an HTTP pool.
COMPATIBLE_POOLS: dict[str, tuple[str, ...]] = {
    "TCP": ("TCP", "HTTP"),
    "HTTP": ("HTTP",),
    "UDP": ("UDP",),
}
# The transport a listener occupies on the VIP: TCP and HTTP both take a TCP port.
TRANSPORT = {"TCP": "TCP", "HTTP": "TCP", "UDP": "UDP"}


def refs(ids: Iterable[str]) -> list[dict[str, str]]:
    """Octavia's way of listing related objects: ``[{"id": ...}, ...]``."""
    return [{"id": ident} for ident in ids]


def fetch_lb(session: Session, ctx: Context, ident: str) -> LoadBalancer:
    return fetch_owned(session, ctx, LoadBalancer, ident, "load_balancer")


def fetch_listener(session: Session, ctx: Context, ident: str) -> Listener:
    return fetch_owned(session, ctx, Listener, ident, "listener")


def fetch_pool(session: Session, ctx: Context, ident: str) -> Pool:
    return fetch_owned(session, ctx, Pool, ident, "pool")


def fetch_monitor(session: Session, ctx: Context, ident: str) -> HealthMonitor:
    return fetch_owned(session, ctx, HealthMonitor, ident, "health_monitor")


def fetch_member(session: Session, ctx: Context, pool_id: str, ident: str) -> Member:
    """A member of that pool: a member id under another pool answers 404 too."""
    pool = fetch_pool(session, ctx, pool_id)
    member = session.get(Member, ident)
    if member is None or member.pool_id != pool.id:
        raise not_found("member", ident)
    return member


def listener_ids(session: Session, lb_id: str) -> list[str]:
    stmt = select(Listener.id).where(Listener.loadbalancer_id == lb_id).order_by(Listener.id)
    return list(session.execute(stmt).scalars())


def pool_ids(session: Session, lb_id: str) -> list[str]:
    stmt = select(Pool.id).where(Pool.loadbalancer_id == lb_id).order_by(Pool.id)
    return list(session.execute(stmt).scalars())


def members_of(session: Session, pool_id: str) -> list[Member]:
    stmt = select(Member).where(Member.pool_id == pool_id).order_by(Member.id)
    return list(session.execute(stmt).scalars())


def listeners_using(session: Session, pool_id: str) -> list[Listener]:
    """Listeners whose default pool is ``pool_id`` (a pool may serve several)."""
    stmt = (
        select(Listener)
        .where(Listener.default_pool_id == pool_id)
        .order_by(Listener.created_at, Listener.id)
    )
    return list(session.execute(stmt).scalars())


def monitor_of(session: Session, pool_id: str) -> HealthMonitor | None:
    stmt = select(HealthMonitor).where(HealthMonitor.pool_id == pool_id)
    return session.execute(stmt).scalar_one_or_none()


def sync_pool_listener(session: Session, pool: Pool) -> None:
    """Keep ``lb_pools.listener_id`` pointing at a listener that uses the pool, if any.

    The API derives a pool's ``listeners`` from the listeners' ``default_pool_id``;
    the column only records one of them for consumers that want a single link.
    """
    session.flush()
    users = listeners_using(session, pool.id)
    pool.listener_id = users[0].id if users else None


def check_compatible(listener_protocol: str, pool_protocol: str) -> None:
    if pool_protocol not in COMPATIBLE_POOLS.get(listener_protocol, ()):
        raise BadRequest(
            f"The pool protocol '{pool_protocol}' cannot serve a listener of protocol "
            f"'{listener_protocol}'.",
            type="ListenerPoolProtocolMismatch",
        )


def apply(row: Any, changes: dict[str, Any], keys: Iterable[str]) -> None:
    """Copy the sent, non-null values of ``keys`` onto ``row`` (null means "unchanged")."""
    for key in keys:
        value = changes.get(key)
        if value is not None:
            setattr(row, key, list(value) if key == "tags" else value)
