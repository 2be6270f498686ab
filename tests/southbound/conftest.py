"""Southbound fixtures: host credentials, the in-process service, a live server."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import uvicorn
from fastapi.testclient import TestClient

from conftest import Api
from netvirt.api.app import create_app
from netvirt.compiler.service import CompilerService
from netvirt.northbound import identity
from netvirt.northbound.context import Context
from netvirt.northbound.db import Database
from netvirt.southbound.memory import InMemorySB


def host_token(db: Database) -> str:
    with db.write(bump=False) as session:
        token = identity.create_token(session, Context.admin(), "admin", "host", "hv")
    return str(token["token"])


@pytest.fixture
def host(db: Database, client: TestClient, admin: Api) -> Api:
    """A client acting with host credentials (after ``admin`` bootstrapped the project)."""
    return Api(client, host_token(db), "admin")


@pytest.fixture
def service(db: Database) -> InMemorySB:
    return InMemorySB(CompilerService(db), poll=0.2)


@dataclass
class Live:
    url: str
    db: Database
    admin_token: str
    host_token: str


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def live(db: Database) -> Iterator[Live]:
    """The API on a real uvicorn server in a thread (for HttpSB)."""
    with db.write() as session:
        admin = identity.bootstrap(session)
    assert admin is not None
    config = uvicorn.Config(
        create_app(db),
        host="127.0.0.1",
        port=_free_port(),
        log_level="warning",
        access_log=False,
        lifespan="off",
        ws="none",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="sb-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive(), "uvicorn exited during startup"
        assert time.monotonic() < deadline, "uvicorn did not start within 10 s"
        time.sleep(0.01)
    try:
        yield Live(f"http://127.0.0.1:{config.port}", db, admin["token"], host_token(db))
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        assert not thread.is_alive(), "uvicorn did not stop"
