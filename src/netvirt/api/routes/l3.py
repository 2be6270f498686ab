"""Routers and floating IPs: /v2.0/routers (with add/remove_router_interface), /v2.0/floatingips.

The interface actions are not CRUD: Neutron answers them with a bare (not
enveloped) body describing the interface, status 200, so they are plain routes
here that still go through one write transaction and report realization.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Response
from sqlalchemy.orm import Session

from netvirt.api.deps import WaitParams, get_context, get_db
from netvirt.api.resources import Resource, mount, realized_response, write
from netvirt.model.l3 import (
    FloatingIPCreate,
    FloatingIPUpdate,
    InterfaceBody,
    RouterCreate,
    RouterUpdate,
)
from netvirt.northbound import floatingips, routers
from netvirt.northbound.context import Context
from netvirt.northbound.db import Database

router = APIRouter()

mount(
    router,
    Resource(
        collection="routers",
        member="router",
        create_model=RouterCreate,
        update_model=RouterUpdate,
        create=routers.create,
        get=routers.get,
        list_all=routers.list_all,
        update=routers.update,
        delete=routers.delete,
    ),
)
mount(
    router,
    Resource(
        collection="floatingips",
        member="floatingip",
        create_model=FloatingIPCreate,
        update_model=FloatingIPUpdate,
        create=floatingips.create,
        get=floatingips.get,
        list_all=floatingips.list_all,
        update=floatingips.update,
        delete=floatingips.delete,
    ),
)

InterfaceAction = Callable[[Session, Context, str, InterfaceBody], dict[str, Any]]


def _run(
    action: InterfaceAction,
    ident: str,
    body: InterfaceBody,
    response: Response,
    ctx: Context,
    db: Database,
    wait: WaitParams,
) -> dict[str, Any]:
    value, result = write(db, lambda s: action(s, ctx, ident, body))
    realized_response(response, db, result, wait)
    info: dict[str, Any] = value
    return info


@router.put("/v2.0/routers/{ident}/add_router_interface", tags=["routers"])
def add_router_interface(
    ident: str,
    body: InterfaceBody,
    response: Response,
    ctx: Context = Depends(get_context),
    db: Database = Depends(get_db),
    wait: WaitParams = Depends(),
) -> dict[str, Any]:
    """Connect a subnet (new port at its gateway IP) or an existing port to the router."""
    return _run(routers.add_interface, ident, body, response, ctx, db, wait)


@router.put("/v2.0/routers/{ident}/remove_router_interface", tags=["routers"])
def remove_router_interface(
    ident: str,
    body: InterfaceBody,
    response: Response,
    ctx: Context = Depends(get_context),
    db: Database = Depends(get_db),
    wait: WaitParams = Depends(),
) -> dict[str, Any]:
    """Disconnect a subnet or port from the router; the interface port is deleted."""
    return _run(routers.remove_interface, ident, body, response, ctx, db, wait)
