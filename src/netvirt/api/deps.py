"""Request dependencies: the database, the caller's context, and waiting for realization."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Literal

from fastapi import Header, Query, Request

from netvirt.northbound import identity
from netvirt.northbound.context import Context
from netvirt.northbound.db import Database
from netvirt.northbound.errors import Forbidden

if TYPE_CHECKING:
    from netvirt.compiler.service import CompilerService

WaitMode = Literal["compiled", "installed"]


def get_db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def get_context(
    request: Request, x_auth_token: str | None = Header(None, alias="X-Auth-Token")
) -> Context:
    db = get_db(request)
    with db.read() as session:
        return identity.authenticate(session, x_auth_token)


def require_admin(ctx: Context) -> Context:
    if not ctx.is_admin:
        raise Forbidden("This operation is restricted to admins.")
    return ctx


class WaitParams:
    """``?wait=compiled|installed&timeout=S`` on any write."""

    def __init__(
        self,
        wait: WaitMode | None = Query(
            None, description="Block until the write is compiled or installed"
        ),
        timeout: float = Query(30.0, ge=0, le=600, description="Seconds to wait at most"),
    ) -> None:
        self.wait = wait
        self.timeout = timeout


def wait_realized(db: Database, generation: int, params: WaitParams) -> str:
    """Wait until ``generation`` is compiled (or installed on every host).

    Returns ``"realized"``, ``"timeout"``, or ``"not-requested"``; the caller
    puts it in the ``X-Netvirt-Realization`` header. A timeout does not fail a
    write that committed: the object exists, it is just not live yet.
    """
    if params.wait is None:
        return "not-requested"
    deadline = time.monotonic() + params.timeout
    key = "compiled_generation" if params.wait == "compiled" else "installed_generation"
    while True:
        seen = db.writes
        with db.read() as session:
            if identity.status(session)[key] >= generation:
                return "realized"
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return "timeout"
        db.wait_changed(min(remaining, 0.05), seen)


def compiler_service(request: Request) -> CompilerService:
    """The app's compiler (created on first use when ``serve`` did not start one)."""
    from netvirt.compiler.service import CompilerService

    service = getattr(request.app.state, "compiler", None)
    if service is None:
        service = CompilerService(get_db(request))
        request.app.state.compiler = service
    assert isinstance(service, CompilerService)
    return service
