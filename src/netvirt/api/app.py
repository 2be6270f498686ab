"""The FastAPI application: routes, error mapping and request-size limits."""

from __future__ import annotations

import json

from fastapi import FastAPI
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from netvirt import __version__
from netvirt.api import errors
from netvirt.api.routes import hosts, l2, l3, lbaas, meta, netvirt, qos, security, southbound
from netvirt.northbound.db import Database
from netvirt.web import routes as web_routes

MAX_BODY = 1 << 20  # 1 MiB: no legitimate Neutron body comes close


class BodyLimit:
    """Refuse bodies over MAX_BODY with 413, whether sent with Content-Length or chunked.

    Counting happens in ``receive`` so a chunked upload is cut off at the
    limit instead of being read into memory whole.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            await _too_large(send)
            return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > MAX_BODY:
                    raise _TooLarge(413, f"Request body larger than {MAX_BODY} bytes.")
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _too_large(send)


class _TooLarge(StarletteHTTPException):
    """Raised from ``receive``: FastAPI passes HTTP exceptions through its body
    parsing untouched, so the API's handler renders the NeutronError 413."""


async def _too_large(send: Send) -> None:
    body = json.dumps(
        {
            "NeutronError": {
                "type": "HTTPRequestEntityTooLarge",
                "message": f"Request body larger than {MAX_BODY} bytes.",
                "detail": "",
            }
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def create_app(db: Database | None = None) -> FastAPI:
    app = FastAPI(
        title="netvirt",
        version=__version__,
        description="Neutron v2.0-shaped networking API of netvirt",
    )
    app.state.db = db or Database()
    errors.install(app)

    app.add_middleware(BodyLimit)
    for module in (meta, netvirt, hosts, l2, l3, security, qos, lbaas, southbound):
        app.include_router(module.router)
    app.include_router(web_routes.router)  # the GUI under /ui/ (not in the OpenAPI schema)
    return app
