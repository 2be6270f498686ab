"""One factory that mounts Neutron-style CRUD routes for a resource.

Every resource answers the same way (envelopes, status codes, list semantics,
``?wait=``, generation header), so the shape is written once here and each
resource module only declares its models and service functions.

This module deliberately does not use ``from __future__ import annotations``:
FastAPI resolves the dynamically built body models from the closures'
annotations at import time.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional, cast

from fastapi import APIRouter, Depends, Header, Request, Response
from pydantic import BaseModel, ConfigDict, create_model
from sqlalchemy.orm import Session

from netvirt.api.deps import WaitParams, get_context, get_db, wait_realized
from netvirt.api.listing import render_list, select_fields
from netvirt.model.types import RequestModel
from netvirt.northbound.context import Context
from netvirt.northbound.db import Database, WriteResult
from netvirt.northbound.errors import BadRequest, PreconditionFailed

Service = Callable[..., Any]


@dataclass
class Resource:
    collection: str
    member: str
    create_model: type[RequestModel] | None
    update_model: type[RequestModel] | None
    create: Service | None
    get: Service
    list_all: Service
    update: Service | None = None
    delete: Service | None = None
    prefix: str = "/v2.0"
    tags: list[str] = field(default_factory=list)
    bulk: bool = True
    # URL segment when it differs from the envelope key (Neutron: /security-groups
    # in the path, "security_groups" in the body)
    path: str | None = None
    dependencies: list[Any] = field(default_factory=list)


def realized_response(
    response: Response, db: Database, result: WriteResult, wait: WaitParams
) -> None:
    response.headers["X-Netvirt-Generation"] = str(result.generation)
    response.headers["X-Netvirt-Realization"] = wait_realized(db, result.generation, wait)


def write(db: Database, fn: Callable[[Session], Any]) -> tuple[Any, WriteResult]:
    result = WriteResult()
    with db.write(result) as session:
        value = fn(session)
    return value, result


def parse_if_match(header: Optional[str]) -> Optional[int]:  # noqa: UP045
    """``If-Match: revision_number=N`` (Neutron's compare-and-swap on updates)."""
    if not header:
        return None
    key, _, value = header.partition("=")
    if key.strip() != "revision_number" or not value.strip().isdigit():
        raise BadRequest(f"Invalid If-Match header {header!r}: expected revision_number=N.")
    return int(value)


def mount(router: APIRouter, res: Resource) -> None:
    base = f"{res.prefix}/{res.path or res.collection}"
    tags: list[str | Enum] = list(res.tags or [res.collection])
    member, collection = res.member, res.collection

    if res.create is not None and res.create_model is not None:
        create_fn = res.create
        item_model: Any = res.create_model
        fields: dict[str, Any] = {member: (Optional[item_model], None)}  # noqa: UP045
        if res.bulk:
            fields[collection] = (Optional[list[item_model]], None)  # noqa: UP045
        body_model = create_model(
            f"{member.title().replace('_', '')}CreateBody",
            __config__=ConfigDict(extra="forbid"),
            **fields,
        )

        def create_endpoint(
            body: body_model,
            response: Response,
            ctx: Context = Depends(get_context),
            db: Database = Depends(get_db),
            wait: WaitParams = Depends(),
        ) -> dict[str, Any]:
            one = getattr(body, member)
            many = getattr(body, collection, None)
            if (one is None) == (many is None):
                raise BadRequest(
                    f"Request body must contain exactly one of '{member}' or '{collection}'."
                )
            if one is not None:
                value, result = write(db, lambda s: create_fn(s, ctx, one))
                realized_response(response, db, result, wait)
                return {member: value}
            items = cast(list[Any], many)
            values, result = write(db, lambda s: [create_fn(s, ctx, item) for item in items])
            realized_response(response, db, result, wait)
            return {collection: values}

        router.add_api_route(
            base,
            create_endpoint,
            methods=["POST"],
            status_code=201,
            tags=tags,
            dependencies=res.dependencies,
            summary=f"Create {member.replace('_', ' ')}(s)",
            name=f"create_{member}",
        )

    list_fn, get_fn = res.list_all, res.get

    def check_revision(
        session: Session,
        ctx: Context,
        ident: str,
        expected: Optional[int],  # noqa: UP045
    ) -> None:
        if expected is None:
            return
        current = get_fn(session, ctx, ident).get("revision_number")
        if current != expected:
            raise PreconditionFailed(
                f"Constrained to {expected}, but current revision is {current}."
            )

    def list_endpoint(
        request: Request, ctx: Context = Depends(get_context), db: Database = Depends(get_db)
    ) -> dict[str, Any]:
        with db.read() as session:
            items = list_fn(session, ctx)
        return render_list(items, request.query_params, str(request.url).split("?")[0], collection)

    router.add_api_route(
        base,
        list_endpoint,
        methods=["GET"],
        tags=tags,
        dependencies=res.dependencies,
        summary=f"List {collection.replace('_', ' ')}",
        name=f"list_{collection}",
    )

    def show_endpoint(
        ident: str,
        request: Request,
        ctx: Context = Depends(get_context),
        db: Database = Depends(get_db),
    ) -> dict[str, Any]:
        with db.read() as session:
            item = get_fn(session, ctx, ident)
        return {member: select_fields(item, request.query_params.getlist("fields"))}

    router.add_api_route(
        base + "/{ident}",
        show_endpoint,
        methods=["GET"],
        tags=tags,
        dependencies=res.dependencies,
        summary=f"Show {member.replace('_', ' ')}",
        name=f"show_{member}",
    )

    if res.update is not None and res.update_model is not None:
        update_fn = res.update
        upd_fields: dict[str, Any] = {member: (res.update_model, ...)}
        upd_model = create_model(
            f"{member.title().replace('_', '')}UpdateBody",
            __config__=ConfigDict(extra="forbid"),
            **upd_fields,
        )

        def update_endpoint(
            ident: str,
            body: upd_model,
            response: Response,
            if_match: Optional[str] = Header(None, alias="If-Match"),  # noqa: UP045
            ctx: Context = Depends(get_context),
            db: Database = Depends(get_db),
            wait: WaitParams = Depends(),
        ) -> dict[str, Any]:
            change = getattr(body, member)
            expected = parse_if_match(if_match)

            def apply(session: Session) -> Any:
                check_revision(session, ctx, ident, expected)
                return update_fn(session, ctx, ident, change)

            value, result = write(db, apply)
            realized_response(response, db, result, wait)
            return {member: value}

        router.add_api_route(
            base + "/{ident}",
            update_endpoint,
            methods=["PUT"],
            tags=tags,
            dependencies=res.dependencies,
            summary=f"Update {member.replace('_', ' ')}",
            name=f"update_{member}",
        )

    if res.delete is not None:
        delete_fn = res.delete

        def delete_endpoint(
            ident: str,
            if_match: Optional[str] = Header(None, alias="If-Match"),  # noqa: UP045
            ctx: Context = Depends(get_context),
            db: Database = Depends(get_db),
            wait: WaitParams = Depends(),
        ) -> Response:
            response = Response(status_code=204)
            expected = parse_if_match(if_match)

            def apply(session: Session) -> None:
                check_revision(session, ctx, ident, expected)
                delete_fn(session, ctx, ident)

            _, result = write(db, apply)
            realized_response(response, db, result, wait)
            return response

        router.add_api_route(
            base + "/{ident}",
            delete_endpoint,
            methods=["DELETE"],
            status_code=204,
            tags=tags,
            dependencies=res.dependencies,
            summary=f"Delete {member.replace('_', ' ')}",
            name=f"delete_{member}",
            response_class=Response,
        )


class Envelope(BaseModel):
    """Marker base for hand-written envelopes (router interface bodies, etc.)."""

    model_config = ConfigDict(extra="forbid")
