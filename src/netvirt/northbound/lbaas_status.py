"""Operating status of load balancer trees, and Octavia's status tree.

Theory of operation
-------------------
Provisioning is synchronous at the API (a write commits or fails), so every
object is ``provisioning_status: ACTIVE`` as soon as it exists. Operating
status is derived, never set by hand, by :func:`recompute` after every write
that touches a load balancer:

* member: ``OFFLINE`` when disabled; ``NO_MONITOR`` when its pool has no
  enabled health monitor; otherwise the last health report, and ``OFFLINE``
  until the first report arrives (health checks run on the hosts and report
  through ``lbaas_members.set_member_operating_status``).
* pool: ``OFFLINE`` when disabled; ``ERROR`` when every enabled member is
  down (``OFFLINE``/``ERROR``), ``DEGRADED`` when some are, else ``ONLINE``.
* listener and health monitor: ``ONLINE``, or ``OFFLINE`` when disabled.
* load balancer: ``OFFLINE`` when disabled; ``ERROR`` when every enabled pool
  is ``ERROR``, ``DEGRADED`` when any is ``ERROR``/``DEGRADED``, else ``ONLINE``.

The rules are pure functions of the rows, so recomputing is idempotent and the
stored statuses never drift from the members' reports.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from netvirt.northbound.context import Context
from netvirt.northbound.lbaas_common import (
    DEGRADED,
    ERROR,
    NO_MONITOR,
    OFFLINE,
    ONLINE,
    fetch_lb,
    members_of,
    monitor_of,
)
from netvirt.northbound.schema import Listener, LoadBalancer, Pool

DOWN = (OFFLINE, ERROR)


def member_status(admin_up: bool, monitored: bool, current: str) -> str:
    if not admin_up:
        return OFFLINE
    if not monitored:
        return NO_MONITOR
    return OFFLINE if current == NO_MONITOR else current


def pool_status(admin_up: bool, members: Iterable[tuple[bool, str]]) -> str:
    """``members`` are (admin_state_up, operating_status) pairs."""
    if not admin_up:
        return OFFLINE
    states = [state for up, state in members if up]
    down = sum(state in DOWN for state in states)
    if down == 0:
        return ONLINE
    return ERROR if down == len(states) else DEGRADED


def lb_status(admin_up: bool, pools: Iterable[str]) -> str:
    if not admin_up:
        return OFFLINE
    live = [state for state in pools if state != OFFLINE]
    if live and all(state == ERROR for state in live):
        return ERROR
    if any(state in (ERROR, DEGRADED) for state in live):
        return DEGRADED
    return ONLINE


def _enabled(admin_up: bool) -> str:
    return ONLINE if admin_up else OFFLINE


def _recompute_pool(session: Session, pool: Pool) -> str:
    monitor = monitor_of(session, pool.id)
    monitored = monitor is not None and monitor.admin_state_up
    if monitor is not None:
        monitor.operating_status = _enabled(monitor.admin_state_up)
    members = members_of(session, pool.id)
    for member in members:
        member.operating_status = member_status(
            member.admin_state_up, monitored, member.operating_status
        )
    pool.operating_status = pool_status(
        pool.admin_state_up, ((m.admin_state_up, m.operating_status) for m in members)
    )
    return pool.operating_status


def recompute(session: Session, lb_id: str) -> None:
    """Derive the operating status of every object of one load balancer."""
    session.flush()
    lb = session.get(LoadBalancer, lb_id)
    if lb is None:
        return
    pools = session.execute(select(Pool).where(Pool.loadbalancer_id == lb_id)).scalars()
    states = [_recompute_pool(session, pool) for pool in pools]
    for listener in session.execute(
        select(Listener).where(Listener.loadbalancer_id == lb_id)
    ).scalars():
        listener.operating_status = _enabled(listener.admin_state_up)
    lb.operating_status = lb_status(lb.admin_state_up, states)
    session.flush()


def _pool_tree(session: Session, pool: Pool) -> dict[str, Any]:
    node: dict[str, Any] = {
        "id": pool.id,
        "name": pool.name,
        "provisioning_status": pool.provisioning_status,
        "operating_status": pool.operating_status,
        "members": [
            {
                "id": m.id,
                "name": m.name,
                "address": m.address,
                "protocol_port": m.protocol_port,
                "provisioning_status": m.provisioning_status,
                "operating_status": m.operating_status,
            }
            for m in members_of(session, pool.id)
        ],
    }
    monitor = monitor_of(session, pool.id)
    if monitor is not None:
        node["health_monitor"] = {
            "id": monitor.id,
            "name": monitor.name,
            "type": monitor.type,
            "provisioning_status": monitor.provisioning_status,
            "operating_status": monitor.operating_status,
        }
    return node


def _listener_tree(session: Session, listener: Listener) -> dict[str, Any]:
    pool = session.get(Pool, listener.default_pool_id) if listener.default_pool_id else None
    return {
        "id": listener.id,
        "name": listener.name,
        "provisioning_status": listener.provisioning_status,
        "operating_status": listener.operating_status,
        "pools": [] if pool is None else [_pool_tree(session, pool)],
    }


def status_tree(session: Session, ctx: Context, lb_id: str) -> dict[str, Any]:
    """Octavia's ``/loadbalancers/{id}/status``: listeners, their pools, members, monitor.

    As in Octavia, a pool no listener uses does not appear in the tree.
    """
    lb = fetch_lb(session, ctx, lb_id)
    listeners = session.execute(
        select(Listener)
        .where(Listener.loadbalancer_id == lb.id)
        .order_by(Listener.created_at, Listener.id)
    ).scalars()
    return {
        "loadbalancer": {
            "id": lb.id,
            "name": lb.name,
            "provisioning_status": lb.provisioning_status,
            "operating_status": lb.operating_status,
            "listeners": [_listener_tree(session, lst) for lst in listeners],
        }
    }
