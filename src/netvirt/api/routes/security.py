"""Security groups and rules: /v2.0/security-groups, /v2.0/security-group-rules.

Listing either collection first makes sure the caller's project has its
``default`` group, as Neutron does: a project whose default was deleted by an
admin gets a fresh one the next time its members look. That creation is a
real NB change, so it runs in its own write transaction (and bumps the
generation) before the read that answers the list.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from netvirt.api.deps import get_context, get_db
from netvirt.api.resources import Resource, mount, write
from netvirt.model.security import (
    SecurityGroupCreate,
    SecurityGroupRuleCreate,
    SecurityGroupUpdate,
)
from netvirt.northbound import security_groups
from netvirt.northbound.context import Context
from netvirt.northbound.db import Database
from netvirt.northbound.default_sg import ensure_default_security_group


def ensure_caller_default(
    request: Request, ctx: Context = Depends(get_context), db: Database = Depends(get_db)
) -> None:
    """On collection GETs only: create the caller's default group if it is missing."""
    if request.method != "GET" or "ident" in request.path_params:
        return
    with db.read() as session:
        if security_groups.has_default(session, ctx.project_id):
            return
    write(db, lambda s: ensure_default_security_group(s, ctx.project_id))


router = APIRouter()

mount(
    router,
    Resource(
        collection="security_groups",
        member="security_group",
        create_model=SecurityGroupCreate,
        update_model=SecurityGroupUpdate,
        create=security_groups.create,
        get=security_groups.get,
        list_all=security_groups.list_all,
        update=security_groups.update,
        delete=security_groups.delete,
        tags=["security-groups"],
        path="security-groups",
        dependencies=[Depends(ensure_caller_default)],
    ),
)
mount(
    router,
    Resource(
        collection="security_group_rules",
        member="security_group_rule",
        create_model=SecurityGroupRuleCreate,
        update_model=None,
        create=security_groups.create_rule,
        get=security_groups.get_rule,
        list_all=security_groups.list_rules,
        delete=security_groups.delete_rule,
        tags=["security-group-rules"],
        path="security-group-rules",
        dependencies=[Depends(ensure_caller_default)],
    ),
)
