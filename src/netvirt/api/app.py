"""The FastAPI application: routes, error mapping and request-size limits."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response

from netvirt import __version__
from netvirt.api import errors
from netvirt.api.routes import l2, l3, lbaas, meta, netvirt, qos, security
from netvirt.northbound.db import Database

MAX_BODY = 1 << 20  # 1 MiB: no legitimate Neutron body comes close


def create_app(db: Database | None = None) -> FastAPI:
    app = FastAPI(
        title="netvirt",
        version=__version__,
        description="Neutron v2.0-shaped networking API of netvirt",
    )
    app.state.db = db or Database()
    errors.install(app)

    @app.middleware("http")
    async def limit_body(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            return errors.error_response(
                413, "HTTPRequestEntityTooLarge", f"Request body larger than {MAX_BODY} bytes."
            )
        return await call_next(request)

    for module in (meta, netvirt, l2, l3, security, qos, lbaas):
        app.include_router(module.router)
    return app
