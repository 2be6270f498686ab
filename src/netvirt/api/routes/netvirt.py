"""netvirt's own extension: projects, tokens, realization status and reports.

``/v2.0/netvirt/projects`` and ``/tokens`` replace Keystone for this
platform; ``/v2.0/netvirt/status`` reports NB/compiled/installed generations.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request, Response
from pydantic import Field

from netvirt.api.deps import compiler_service, get_context, get_db, require_admin
from netvirt.api.routes.hosts import with_heartbeats
from netvirt.model.types import RequestModel
from netvirt.northbound import identity
from netvirt.northbound.context import Context
from netvirt.northbound.db import Database, WriteResult
from netvirt.northbound.errors import BadRequest
from netvirt.northbound.trace_support import display_names, resolve_port

router = APIRouter(prefix="/v2.0/netvirt", tags=["netvirt"])


class ProjectCreate(RequestModel):
    name: str = Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9_.@-]+$")
    description: str = Field("", max_length=255)


class ProjectBody(RequestModel):
    project: ProjectCreate


class TokenCreate(RequestModel):
    project: str = Field(min_length=1, max_length=255, description="Project id or name")
    role: Literal["admin", "member"] = "member"
    description: str = Field("", max_length=255)


class TokenBody(RequestModel):
    token: TokenCreate


class Report(RequestModel):
    component: Literal["compiler", "host"]
    name: str = Field(min_length=1, max_length=255)
    generation: int = Field(ge=0, le=2**31 - 1)


class ReportBody(RequestModel):
    report: Report


@router.get("/projects", summary="List projects")
def list_projects(
    ctx: Context = Depends(get_context), db: Database = Depends(get_db)
) -> dict[str, Any]:
    with db.read() as session:
        return {"projects": identity.list_projects(session, ctx)}


@router.post("/projects", status_code=201, summary="Create a project (admin)")
def create_project(
    body: ProjectBody,
    response: Response,
    ctx: Context = Depends(get_context),
    db: Database = Depends(get_db),
) -> dict[str, Any]:
    result = WriteResult()
    with db.write(result) as session:
        project = identity.create_project(session, ctx, body.project.name, body.project.description)
    response.headers["X-Netvirt-Generation"] = str(result.generation)
    return {"project": project}


@router.post("/tokens", status_code=201, summary="Create a token for a project (admin)")
def create_token(
    body: TokenBody, ctx: Context = Depends(get_context), db: Database = Depends(get_db)
) -> dict[str, Any]:
    with db.write(bump=False) as session:
        token = identity.create_token(
            session, ctx, body.token.project, body.token.role, body.token.description
        )
    return {"token": token}


@router.get("/whoami", summary="The caller's project and role")
def whoami(ctx: Context = Depends(get_context)) -> dict[str, Any]:
    return {"project_id": ctx.project_id, "role": "admin" if ctx.is_admin else "member"}


@router.get("/status", summary="Realization status: NB, compiled and installed generations")
def status(
    request: Request, _ctx: Context = Depends(get_context), db: Database = Depends(get_db)
) -> dict[str, Any]:
    """Each host also carries ``last_seen`` and ``alive`` (its heartbeat, see hosts.py)."""
    with db.read() as session:
        data = identity.status(session)
    return {"status": with_heartbeats(request, data)}


@router.post("/status/reports", status_code=204, summary="Report a realized generation (admin)")
def report(
    body: ReportBody, ctx: Context = Depends(get_context), db: Database = Depends(get_db)
) -> Response:
    require_admin(ctx)
    with db.write(bump=False) as session:
        identity.report(session, body.report.component, body.report.name, body.report.generation)
    return Response(status_code=204)


class TraceRequest(RequestModel):
    from_port: str = Field(min_length=1, max_length=255, description="Port id, id prefix or name")
    microflow: str = Field(
        "", max_length=4096, description="e.g. ip4.dst == 8.8.8.8 && tcp.dst == 443"
    )


class TraceBody(RequestModel):
    trace: TraceRequest


@router.post("/trace", summary="Trace a packet from a port through the logical topology")
def trace(
    body: TraceBody,
    request: Request,
    ctx: Context = Depends(get_context),
    db: Database = Depends(get_db),
) -> dict[str, Any]:
    """Like ovn-trace: every stage, flow, provenance and the verdict. A member may
    trace only from its own ports."""
    from netvirt.trace.run import TraceError, format_text, new_conntrack, run_trace, to_json

    with db.read() as session:
        port_id = resolve_port(session, ctx, body.trace.from_port)
        names = display_names(session)
    compiler = compiler_service(request)
    sb = compiler.current()
    try:
        result = run_trace(
            sb, port_id, body.trace.microflow, new_conntrack(), now=time.time(), port_names=names
        )
    except TraceError as err:
        raise BadRequest(str(err), type="InvalidTrace") from None
    data = to_json(result, names)
    data["text"] = format_text(result, names)
    data["generation"] = sb.generation
    return {"trace": data}
