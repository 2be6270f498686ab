"""Health monitor service (Octavia v2 ``/v2/lbaas/healthmonitors``).

One monitor per pool. Creating (or enabling) it puts the pool's members in
``OFFLINE`` until the hosts report; deleting (or disabling) it puts them back
to ``NO_MONITOR`` (see ``lbaas_status``). HTTP monitors get Octavia's defaults
(``GET``, ``/``, ``200``); other types carry no HTTP options at all.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from netvirt.model.lbaas import (
    HTTP_ONLY,
    HealthMonitorCreate,
    HealthMonitorUpdate,
    check_monitor_fields,
)
from netvirt.northbound.access import owned_clause, select_visible
from netvirt.northbound.context import Context
from netvirt.northbound.errors import Conflict, InvalidInput
from netvirt.northbound.lbaas_common import apply, fetch_monitor, fetch_pool, monitor_of, refs
from netvirt.northbound.lbaas_status import recompute
from netvirt.northbound.schema import HealthMonitor, Pool
from netvirt.northbound.schema.base import standard_fields

HTTP_DEFAULTS = {"http_method": "GET", "url_path": "/", "expected_codes": "200"}
TIMING = ("delay", "timeout", "max_retries", "max_retries_down")
UPDATABLE = ("name", "admin_state_up", "tags", *TIMING)


def to_dict(monitor: HealthMonitor) -> dict[str, Any]:
    body = standard_fields(monitor) | {
        "type": monitor.type,
        "delay": monitor.delay,
        "timeout": monitor.timeout,
        "max_retries": monitor.max_retries,
        "max_retries_down": monitor.max_retries_down,
        "http_method": monitor.http_method,
        "url_path": monitor.url_path,
        "expected_codes": monitor.expected_codes,
        "admin_state_up": monitor.admin_state_up,
        "pools": refs([monitor.pool_id]),
        "provisioning_status": monitor.provisioning_status,
        "operating_status": monitor.operating_status,
    }
    del body["description"]  # Octavia monitors have no description
    return body


def _http_options(monitor_type: str, values: dict[str, Any]) -> dict[str, str | None]:
    """The three HTTP options, defaulted for HTTP monitors and null for the others."""
    if monitor_type != "HTTP":
        return dict.fromkeys(HTTP_ONLY)
    return {key: values.get(key) or HTTP_DEFAULTS[key] for key in HTTP_ONLY}


def create(session: Session, ctx: Context, req: HealthMonitorCreate) -> dict[str, Any]:
    pool = fetch_pool(session, ctx, req.pool_id)
    if monitor_of(session, pool.id) is not None:
        raise Conflict(
            f"Pool {pool.id} already has a health monitor.", type="DuplicateHealthMonitor"
        )
    monitor = HealthMonitor(
        project_id=pool.project_id,
        pool_id=pool.id,
        name=req.name,
        type=req.type,
        delay=req.delay,
        timeout=req.timeout,
        max_retries=req.max_retries,
        max_retries_down=req.max_retries_down,
        admin_state_up=req.admin_state_up,
        tags=list(req.tags),
        **_http_options(req.type, req.model_dump()),
    )
    session.add(monitor)
    recompute(session, pool.loadbalancer_id)
    return to_dict(monitor)


def get(session: Session, ctx: Context, ident: str) -> dict[str, Any]:
    return to_dict(fetch_monitor(session, ctx, ident))


def list_all(session: Session, ctx: Context) -> list[dict[str, Any]]:
    rows = session.execute(select_visible(HealthMonitor, owned_clause(ctx, HealthMonitor)))
    return [to_dict(row) for row in rows.scalars()]


def update(session: Session, ctx: Context, ident: str, req: HealthMonitorUpdate) -> dict[str, Any]:
    """Merge the change over the stored values and check the result as a whole."""
    monitor = fetch_monitor(session, ctx, ident)
    changes = req.set_fields()
    merged = {key: getattr(monitor, key) for key in ("type", *TIMING)}
    merged |= {k: changes[k] for k in TIMING if changes.get(k) is not None}
    http = {k: changes.get(k, getattr(monitor, k)) for k in HTTP_ONLY}
    try:
        check_monitor_fields(merged | {k: changes.get(k) for k in HTTP_ONLY})
    except ValueError as exc:
        raise InvalidInput("healthmonitor", str(exc)) from None
    for key, value in _http_options(monitor.type, http).items():
        setattr(monitor, key, value)
    apply(monitor, changes, UPDATABLE)
    monitor.revision_number += 1
    _recompute_for(session, monitor)
    return to_dict(monitor)


def delete(session: Session, ctx: Context, ident: str) -> None:
    monitor = fetch_monitor(session, ctx, ident)
    session.delete(monitor)
    _recompute_for(session, monitor)


def _recompute_for(session: Session, monitor: HealthMonitor) -> None:
    pool = session.get(Pool, monitor.pool_id)
    if pool is not None:
        recompute(session, pool.loadbalancer_id)
