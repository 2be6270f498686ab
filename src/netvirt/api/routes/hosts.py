"""Hosts and counters: ``/v2.0/netvirt/hosts`` (admin) and ``/ports/{id}/counters``.

What hosts report through the southbound API (registration, installed
generation, stats every ~2 s) joined into one view per host, like Neutron's
agent list (``alive`` from a heartbeat); see :mod:`netvirt.southbound.hosts`.
Host names, underlay addresses and per-host counters are infrastructure, so
the host routes are admin-only (403 otherwise). A port's counters are the
port's own business: visible to whoever may see the port (404 otherwise,
as Neutron answers for another project's port).
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, Request

from netvirt.api.deps import get_context, get_db, require_admin
from netvirt.northbound import identity, ports
from netvirt.northbound.context import Context
from netvirt.northbound.db import Database
from netvirt.northbound.errors import NotFound
from netvirt.southbound.hosts import (
    HostSources,
    host_view,
    host_views,
    iso,
    parse_iso,
    port_view,
)
from netvirt.southbound.memory import ALIVE_AFTER, InMemorySB

router = APIRouter(prefix="/v2.0/netvirt", tags=["netvirt"])


def running_southbound(request: Request) -> InMemorySB | None:
    """The app's SB service if it exists: without one no host ever reported to this
    process, and a read must not create it (it would compile)."""
    service = getattr(request.app.state, "southbound", None)
    return service if isinstance(service, InMemorySB) else None


def host_sources(request: Request, db: Database) -> HostSources:
    """Everything the host views read, now."""
    with db.read() as session:
        status = identity.status(session)
    return sources_for(request, status)


def sources_for(request: Request, status: dict[str, Any]) -> HostSources:
    """The host views' sources, given the realization status (``identity.status``)."""
    realization = {
        h["host"]: (int(h["installed_generation"]), parse_iso(h["reported_at"]))
        for h in status["hosts"]
    }
    compiled = int(status["compiled_generation"])
    service = running_southbound(request)
    if service is None:
        return HostSources(time.time(), ALIVE_AFTER, compiled, realization=realization)
    return HostSources(
        now=service.clock(),
        alive_after=service.alive_after,
        compiled_generation=compiled,
        chassis=service.chassis(),
        last_seen=service.last_seen(),
        stats=service.host_stats(),
        realization=realization,
    )


def with_heartbeats(request: Request, status: dict[str, Any]) -> dict[str, Any]:
    """``status`` with ``last_seen`` and ``alive`` on each host (for up/down displays)."""
    sources = sources_for(request, status)
    hosts = [
        h | {"last_seen": iso(sources.seen(h["host"])), "alive": sources.alive(h["host"])}
        for h in status["hosts"]
    ]
    return status | {"hosts": hosts}


@router.get("/hosts", summary="Hosts: heartbeat, installed generation and counters (admin)")
def list_hosts(
    request: Request, ctx: Context = Depends(get_context), db: Database = Depends(get_db)
) -> dict[str, Any]:
    require_admin(ctx)
    return {"hosts": host_views(host_sources(request, db))}


@router.get("/hosts/{name}", summary="One host: heartbeat, installed generation, counters (admin)")
def show_host(
    name: str,
    request: Request,
    ctx: Context = Depends(get_context),
    db: Database = Depends(get_db),
) -> dict[str, Any]:
    require_admin(ctx)
    sources = host_sources(request, db)
    if name not in sources.names():
        raise NotFound(f"Host {name} could not be found.", type="HostNotFound")
    return {"host": host_view(sources, name)}


@router.get("/ports/{port_id}/counters", summary="A port's packet, byte and drop counters")
def port_counters(
    port_id: str,
    request: Request,
    ctx: Context = Depends(get_context),
    db: Database = Depends(get_db),
) -> dict[str, Any]:
    with db.read() as session:
        port = ports.get(session, ctx, port_id)  # 404 PortNotFound unless visible
    sources = host_sources(request, db)
    return {"counters": port_view(sources, port["id"], port["binding:host_id"])}
