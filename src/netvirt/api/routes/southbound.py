"""The southbound API: what host agents call, under ``/v2.0/netvirt/sb``.

Only host credentials (tokens with role ``host``) are accepted here, and host
credentials are accepted nowhere else (see ``identity.authenticate``). The
wire format is :mod:`netvirt.southbound.codec`; the service behind it is
:class:`~netvirt.southbound.memory.InMemorySB`, one per app, created on first
use from the app's compiler. ``GET /changes`` long-polls on a worker thread:
each waiting agent holds one thread of the server's pool for up to
``timeout`` seconds (60 at most), which sizes a deployment (docs/southbound.md).
"""

from __future__ import annotations

import threading
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from pydantic import Field

from netvirt.api.deps import compiler_service, get_db
from netvirt.model.types import IPAddress, RequestModel
from netvirt.northbound import identity
from netvirt.southbound.hosts import StatsDoc
from netvirt.southbound.memory import InMemorySB
from netvirt.southbound.model import Chassis

router = APIRouter(prefix="/v2.0/netvirt/sb", tags=["southbound"])
_create_lock = threading.Lock()
MAX_POLL = 60.0

ChassisName = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9_.:-]+$")]


def southbound_service(request: Request) -> InMemorySB:
    """The app's SB service (created on first use, from the app's compiler)."""
    service = getattr(request.app.state, "southbound", None)
    if service is None:
        compiler = compiler_service(request)
        with _create_lock:
            service = getattr(request.app.state, "southbound", None)
            if service is None:
                service = InMemorySB(compiler)
                request.app.state.southbound = service
    assert isinstance(service, InMemorySB)
    return service


def _json(body: bytes) -> Response:
    return Response(content=body, media_type="application/json")


def get_host(
    request: Request, x_auth_token: str | None = Header(None, alias="X-Auth-Token")
) -> str:
    """The calling host's token id; 401 without a token, 403 for tenant tokens."""
    with get_db(request).read() as session:
        return identity.authenticate_host(session, x_auth_token)


class ChassisBody(RequestModel):
    name: ChassisName
    encap: Literal["geneve", "vxlan"] = "geneve"
    ip: IPAddress


class PortReport(RequestModel):
    chassis: ChassisName
    up: bool


class PortClaim(RequestModel):
    port: str = Field(min_length=1, max_length=255)
    up: bool


class PortReports(RequestModel):
    chassis: ChassisName
    ports: list[PortClaim] = Field(max_length=10000)


class InstalledReport(RequestModel):
    chassis: ChassisName
    generation: int = Field(ge=0, le=2**31 - 1)


class StatsReport(RequestModel):
    chassis: ChassisName
    stats: StatsDoc


class MemberHealthReport(RequestModel):
    chassis: ChassisName
    status: Literal["ONLINE", "ERROR"]


CHASSIS_VIEW = "Only the flows of the datapaths this chassis needs (docs/southbound.md)"


@router.get("/snapshot", summary="The whole SB state (host credentials)")
def snapshot(
    chassis: str | None = Query(None, max_length=255, description=CHASSIS_VIEW),
    _host: str = Depends(get_host),
    service: InMemorySB = Depends(southbound_service),
) -> Response:
    return _json(service.snapshot_change(chassis or None).body())


@router.get(
    "/changes",
    summary="Changes after a generation: a delta or a full state; 204 when none (long-poll)",
    responses={204: {"description": "Nothing changed within the timeout"}},
)
def changes(
    since: int = Query(ge=0, description="The generation the agent holds"),
    timeout: float = Query(30.0, ge=0, le=MAX_POLL, description="Seconds to wait at most"),
    chassis: str | None = Query(None, max_length=255, description=CHASSIS_VIEW),
    _host: str = Depends(get_host),
    service: InMemorySB = Depends(southbound_service),
) -> Response:
    change = service.poll_changes(since, timeout, chassis or None)
    if change is None:
        return Response(status_code=204)
    return _json(change.body())


@router.post("/chassis", status_code=204, summary="Register a chassis (host credentials)")
def register_chassis(
    body: ChassisBody,
    _host: str = Depends(get_host),
    service: InMemorySB = Depends(southbound_service),
) -> Response:
    service.register_chassis(Chassis(body.name, body.encap, str(body.ip)))
    return Response(status_code=204)


@router.put("/ports/{port_id}", status_code=204, summary="Report a port's chassis and link")
def report_port(
    port_id: str,
    body: PortReport,
    _host: str = Depends(get_host),
    service: InMemorySB = Depends(southbound_service),
) -> Response:
    service.report_port(port_id, body.chassis, body.up)
    return Response(status_code=204)


@router.post(
    "/ports",
    status_code=204,
    summary="Report many ports' chassis and link at once (unknown ports are skipped)",
)
def report_ports(
    body: PortReports,
    _host: str = Depends(get_host),
    service: InMemorySB = Depends(southbound_service),
) -> Response:
    service.report_ports([(p.port, p.up) for p in body.ports], body.chassis)
    return Response(status_code=204)


@router.post("/installed", status_code=204, summary="Report the generation a host installed")
def report_installed(
    body: InstalledReport,
    _host: str = Depends(get_host),
    service: InMemorySB = Depends(southbound_service),
) -> Response:
    service.report_installed(body.chassis, body.generation)
    return Response(status_code=204)


@router.put(
    "/members/{member_id}/health",
    status_code=204,
    summary="Report a load balancer member's health check result (host credentials)",
)
def report_member_health(
    member_id: str,
    body: MemberHealthReport,
    _host: str = Depends(get_host),
    service: InMemorySB = Depends(southbound_service),
) -> Response:
    """Stale reports (no monitor any more, the member's port bound elsewhere) are 204 too:
    they race with configuration changes and must not make the agent retry."""
    service.report_member_health(body.chassis, member_id, body.status)
    return Response(status_code=204)


@router.post(
    "/stats",
    status_code=204,
    summary="Report a host's counters; also its heartbeat (host credentials)",
)
def report_stats(
    body: StatsReport,
    _host: str = Depends(get_host),
    service: InMemorySB = Depends(southbound_service),
) -> Response:
    """Kept in memory, newest per chassis (no store write, no generation bump); sizes are
    bounded by the document's model and the API's body limit (docs/southbound.md)."""
    service.report_stats(body.chassis, body.stats.model_dump())
    return Response(status_code=204)
