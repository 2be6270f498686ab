"""Mapping every failure to Neutron's error body ``{"NeutronError": {...}}``.

pydantic validation errors become 400 ``InvalidInput`` naming the field;
integrity errors that slipped past the services' checks (a race the unique
constraints caught) become 409, never 500; unknown routes 404.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException

from netvirt.northbound.errors import NeutronError

log = logging.getLogger(__name__)

HTTP_TYPES = {
    400: "HTTPBadRequest",
    401: "HTTPUnauthorized",
    403: "HTTPForbidden",
    404: "HTTPNotFound",
    405: "HTTPMethodNotAllowed",
    409: "HTTPConflict",
    413: "HTTPRequestEntityTooLarge",
}


def error_response(status: int, type_: str, message: str, detail: str = "") -> JSONResponse:
    body = {"NeutronError": {"type": type_, "message": message, "detail": detail}}
    return JSONResponse(body, status_code=status)


def describe_validation(errors: list[Any]) -> str:
    """One readable sentence per error: 'Invalid input for cidr. Reason: …'."""
    parts = []
    for err in errors:
        loc = [str(x) for x in err.get("loc", ()) if x not in ("body",)]
        # drop the envelope key ("network") and the union member names pydantic adds
        if len(loc) > 1:
            loc = loc[1:]
        field = (
            ".".join(x for x in loc if not x.startswith(("function-", "literal[", "str", "int")))
            or "body"
        )
        msg = str(err.get("msg", "invalid value"))
        msg = msg.removeprefix("Value error, ")
        if err.get("type") == "extra_forbidden":
            msg = "Unrecognized attribute"
        elif err.get("type") == "missing":
            msg = "This field is required"
        parts.append(f"Invalid input for {field}. Reason: {msg}.")
    return " ".join(dict.fromkeys(parts))


def install(app: FastAPI) -> None:
    @app.exception_handler(NeutronError)
    async def _neutron(_req: Request, exc: NeutronError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(400, "HTTPBadRequest", describe_validation(list(exc.errors())))

    @app.exception_handler(IntegrityError)
    async def _integrity(_req: Request, exc: IntegrityError) -> JSONResponse:
        log.info("integrity error mapped to 409: %s", exc.orig)
        return error_response(
            409,
            "Conflict",
            "The request conflicts with the current state (object in use or duplicate).",
        )

    @app.exception_handler(DataError)
    async def _data(_req: Request, exc: DataError) -> JSONResponse:
        # e.g. a NUL character or an out-of-range number the database refuses
        log.info("data error mapped to 400: %s", exc.orig)
        return error_response(400, "HTTPBadRequest", "Invalid input: a value cannot be stored.")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, exc: StarletteHTTPException) -> JSONResponse:
        type_ = HTTP_TYPES.get(exc.status_code, "HTTPError")
        return error_response(exc.status_code, type_, str(exc.detail))
