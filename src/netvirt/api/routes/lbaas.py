"""Load balancers shaped like Octavia v2: ``/v2/lbaas/...``.

Load balancers, listeners, pools and health monitors use the shared CRUD
factory (Octavia's envelopes and list semantics match Neutron's). The rest is
written here: members are nested under their pool, deleting a load balancer
takes ``?cascade=true``, and the status tree and provider list are read-only.
Errors keep netvirt's ``NeutronError`` body rather than Octavia's
``faultstring`` one, so every client of netvirt parses one error shape.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response

from netvirt.api.deps import WaitParams, get_context, get_db
from netvirt.api.listing import render_list, select_fields
from netvirt.api.resources import Envelope, Resource, mount, realized_response, write
from netvirt.model.lbaas import (
    PROVIDER,
    HealthMonitorCreate,
    HealthMonitorUpdate,
    ListenerCreate,
    ListenerUpdate,
    LoadBalancerCreate,
    LoadBalancerUpdate,
    MemberCreate,
    MemberUpdate,
    PoolCreate,
    PoolUpdate,
)
from netvirt.northbound import lbaas, lbaas_listeners, lbaas_members, lbaas_monitors, lbaas_pools
from netvirt.northbound.context import Context
from netvirt.northbound.db import Database

PREFIX = "/v2/lbaas"
TAGS: list[Any] = ["lbaas"]
MEMBERS = PREFIX + "/pools/{pool_id}/members"

router = APIRouter()


def _crud(
    collection: str, member: str, module: Any, create: Any, update: Any, *, delete: bool = True
) -> Resource:
    """CRUD routes under /v2/lbaas; ``delete=False`` when the route is written by hand."""
    return Resource(
        collection=collection,
        member=member,
        create_model=create,
        update_model=update,
        create=module.create,
        get=module.get,
        list_all=module.list_all,
        update=module.update,
        delete=module.delete if delete else None,
        prefix=PREFIX,
        tags=TAGS,
        bulk=False,
    )


mount(
    router,
    _crud(
        "loadbalancers", "loadbalancer", lbaas, LoadBalancerCreate, LoadBalancerUpdate, delete=False
    ),
)
mount(router, _crud("listeners", "listener", lbaas_listeners, ListenerCreate, ListenerUpdate))
mount(router, _crud("pools", "pool", lbaas_pools, PoolCreate, PoolUpdate))
mount(
    router,
    _crud(
        "healthmonitors", "healthmonitor", lbaas_monitors, HealthMonitorCreate, HealthMonitorUpdate
    ),
)


@router.delete(
    PREFIX + "/loadbalancers/{ident}",
    status_code=204,
    response_class=Response,
    tags=TAGS,
    summary="Delete load balancer (cascade=true deletes its whole tree)",
)
def delete_loadbalancer(
    ident: str,
    cascade: bool = Query(False, description="Also delete listeners, pools, members, monitors"),
    ctx: Context = Depends(get_context),
    db: Database = Depends(get_db),
    wait: WaitParams = Depends(),
) -> Response:
    response = Response(status_code=204)
    _, result = write(db, lambda s: lbaas.delete(s, ctx, ident, cascade=cascade))
    realized_response(response, db, result, wait)
    return response


@router.get(PREFIX + "/loadbalancers/{ident}/status", tags=TAGS, summary="Status tree")
def loadbalancer_status(
    ident: str, ctx: Context = Depends(get_context), db: Database = Depends(get_db)
) -> dict[str, Any]:
    with db.read() as session:
        return {"statuses": lbaas.status_tree(session, ctx, ident)}


@router.get(PREFIX + "/providers", tags=TAGS, summary="List providers")
def list_providers(_ctx: Context = Depends(get_context)) -> dict[str, Any]:
    return {
        "providers": [
            {"name": PROVIDER, "description": "netvirt distributed load balancer (L4, HTTP)"}
        ]
    }


class MemberCreateBody(Envelope):
    member: MemberCreate


class MemberUpdateBody(Envelope):
    member: MemberUpdate


@router.get(MEMBERS, tags=TAGS, summary="List members")
def list_members(
    pool_id: str,
    request: Request,
    ctx: Context = Depends(get_context),
    db: Database = Depends(get_db),
) -> dict[str, Any]:
    with db.read() as session:
        items = lbaas_members.list_all(session, ctx, pool_id)
    return render_list(items, request.query_params, str(request.url).split("?")[0], "members")


@router.post(MEMBERS, status_code=201, tags=TAGS, summary="Create member")
def create_member(
    pool_id: str,
    body: MemberCreateBody,
    response: Response,
    ctx: Context = Depends(get_context),
    db: Database = Depends(get_db),
    wait: WaitParams = Depends(),
) -> dict[str, Any]:
    value, result = write(db, lambda s: lbaas_members.create(s, ctx, pool_id, body.member))
    realized_response(response, db, result, wait)
    return {"member": value}


@router.get(MEMBERS + "/{ident}", tags=TAGS, summary="Show member")
def show_member(
    pool_id: str,
    ident: str,
    request: Request,
    ctx: Context = Depends(get_context),
    db: Database = Depends(get_db),
) -> dict[str, Any]:
    with db.read() as session:
        item = lbaas_members.get(session, ctx, pool_id, ident)
    return {"member": select_fields(item, request.query_params.getlist("fields"))}


@router.put(MEMBERS + "/{ident}", tags=TAGS, summary="Update member")
def update_member(
    pool_id: str,
    ident: str,
    body: MemberUpdateBody,
    response: Response,
    ctx: Context = Depends(get_context),
    db: Database = Depends(get_db),
    wait: WaitParams = Depends(),
) -> dict[str, Any]:
    value, result = write(db, lambda s: lbaas_members.update(s, ctx, pool_id, ident, body.member))
    realized_response(response, db, result, wait)
    return {"member": value}


@router.delete(
    MEMBERS + "/{ident}",
    status_code=204,
    response_class=Response,
    tags=TAGS,
    summary="Delete member",
)
def delete_member(
    pool_id: str,
    ident: str,
    ctx: Context = Depends(get_context),
    db: Database = Depends(get_db),
    wait: WaitParams = Depends(),
) -> Response:
    response = Response(status_code=204)
    _, result = write(db, lambda s: lbaas_members.delete(s, ctx, pool_id, ident))
    realized_response(response, db, result, wait)
    return response
