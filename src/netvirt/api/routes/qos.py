"""QoS: /v2.0/qos/policies, their bandwidth_limit / dscp_marking rules, /v2.0/qos/rule-types.

Policies use the shared ``mount``; rules live under a policy
(``/v2.0/qos/policies/{policy_id}/<type>_rules``), a shape ``mount`` does not
build, so :func:`mount_rules` writes those five routes once for both types.

Like ``resources.py``, this module does not use ``from __future__ import
annotations``: the route closures are annotated with body models built at
import time, which FastAPI must see as real classes.
"""

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import ConfigDict, create_model

from netvirt.api.deps import WaitParams, get_context, get_db
from netvirt.api.listing import render_list, select_fields
from netvirt.api.resources import Resource, mount, realized_response, write
from netvirt.model.qos import (
    RULE_TYPES,
    BandwidthLimitRuleCreate,
    BandwidthLimitRuleUpdate,
    DscpMarkingRuleCreate,
    DscpMarkingRuleUpdate,
    QosPolicyCreate,
    QosPolicyUpdate,
)
from netvirt.model.types import RequestModel
from netvirt.northbound import qos
from netvirt.northbound.context import Context
from netvirt.northbound.db import Database

router = APIRouter()

mount(
    router,
    Resource(
        collection="policies",
        member="policy",
        create_model=QosPolicyCreate,
        update_model=QosPolicyUpdate,
        create=qos.create,
        get=qos.get,
        list_all=qos.list_all,
        update=qos.update,
        delete=qos.delete,
        prefix="/v2.0/qos",
        tags=["qos"],
    ),
)


def _envelope(name: str, member: str, model: type[RequestModel]) -> Any:
    fields: dict[str, Any] = {member: (model, ...)}
    return create_model(name, __config__=ConfigDict(extra="forbid"), **fields)


def mount_rules(
    target: APIRouter,
    kind: str,
    create_body: type[RequestModel],
    update_body: type[RequestModel],
) -> None:
    """CRUD routes for one rule type under its policy."""
    member, collection = f"{kind}_rule", f"{kind}_rules"
    base = f"/v2.0/qos/policies/{{policy_id}}/{collection}"
    title = kind.title().replace("_", "")
    create_model_: Any = _envelope(f"{title}RuleCreateBody", member, create_body)
    update_model_: Any = _envelope(f"{title}RuleUpdateBody", member, update_body)
    tags: list[Any] = ["qos"]

    def create_endpoint(
        policy_id: str,
        body: create_model_,
        response: Response,
        ctx: Context = Depends(get_context),
        db: Database = Depends(get_db),
        wait: WaitParams = Depends(),
    ) -> dict[str, Any]:
        req = getattr(body, member)
        value, result = write(db, lambda s: qos.create_rule(s, ctx, policy_id, kind, req))
        realized_response(response, db, result, wait)
        return {member: value}

    def list_endpoint(
        policy_id: str,
        request: Request,
        ctx: Context = Depends(get_context),
        db: Database = Depends(get_db),
    ) -> dict[str, Any]:
        with db.read() as session:
            items = qos.list_rules(session, ctx, policy_id, kind)
        url = str(request.url).split("?")[0]
        return render_list(items, request.query_params, url, collection)

    def show_endpoint(
        policy_id: str,
        rule_id: str,
        request: Request,
        ctx: Context = Depends(get_context),
        db: Database = Depends(get_db),
    ) -> dict[str, Any]:
        with db.read() as session:
            item = qos.get_rule(session, ctx, policy_id, kind, rule_id)
        return {member: select_fields(item, request.query_params.getlist("fields"))}

    def update_endpoint(
        policy_id: str,
        rule_id: str,
        body: update_model_,
        response: Response,
        ctx: Context = Depends(get_context),
        db: Database = Depends(get_db),
        wait: WaitParams = Depends(),
    ) -> dict[str, Any]:
        req = getattr(body, member)
        value, result = write(db, lambda s: qos.update_rule(s, ctx, policy_id, kind, rule_id, req))
        realized_response(response, db, result, wait)
        return {member: value}

    def delete_endpoint(
        policy_id: str,
        rule_id: str,
        ctx: Context = Depends(get_context),
        db: Database = Depends(get_db),
        wait: WaitParams = Depends(),
    ) -> Response:
        response = Response(status_code=204)
        _, result = write(db, lambda s: qos.delete_rule(s, ctx, policy_id, kind, rule_id))
        realized_response(response, db, result, wait)
        return response

    one = base + "/{rule_id}"
    target.add_api_route(
        base,
        create_endpoint,
        methods=["POST"],
        status_code=201,
        tags=tags,
        name=f"create_{member}",
    )
    target.add_api_route(base, list_endpoint, methods=["GET"], tags=tags, name=f"list_{collection}")
    target.add_api_route(one, show_endpoint, methods=["GET"], tags=tags, name=f"show_{member}")
    target.add_api_route(one, update_endpoint, methods=["PUT"], tags=tags, name=f"update_{member}")
    target.add_api_route(
        one,
        delete_endpoint,
        methods=["DELETE"],
        status_code=204,
        tags=tags,
        name=f"delete_{member}",
        response_class=Response,
    )


mount_rules(router, "bandwidth_limit", BandwidthLimitRuleCreate, BandwidthLimitRuleUpdate)
mount_rules(router, "dscp_marking", DscpMarkingRuleCreate, DscpMarkingRuleUpdate)


@router.get("/v2.0/qos/rule-types", tags=["qos"], name="list_qos_rule_types")
def list_rule_types(ctx: Context = Depends(get_context)) -> dict[str, Any]:
    """The rule types every netvirt host enforces (no per-driver differences)."""
    return {"rule_types": [{"type": kind} for kind in RULE_TYPES]}
