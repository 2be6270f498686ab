"""Integration fixtures: real PostgreSQL, a store on either backend, a real API server.

``any_db`` runs a test once on an SQLite file and once on a fresh PostgreSQL
database; it also replaces the root conftest's ``db``, so ``client``,
``admin`` and ``make_project`` from there work on both backends unchanged.
``live_server`` serves the app with uvicorn on a free loopback port, for what
only a real HTTP server shows (parallel requests, body limits on the wire).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from integration.pg import PgServer, free_port, unavailable_reason
from netvirt.api.app import create_app
from netvirt.northbound import identity
from netvirt.northbound.db import Database


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One PostgreSQL cluster for the whole session (starting one costs seconds)."""
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    server = PgServer()
    try:
        server.start()
        server.create_database("netvirt")
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url(pg_server: PgServer) -> str:
    """``postgresql+psycopg://postgres@127.0.0.1:PORT/netvirt``: one database shared by
    the session, for tests that clean up after themselves."""
    return pg_server.url("netvirt")


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """A fresh, empty database per test, dropped afterwards."""
    name = pg_server.create_database()
    yield pg_server.url(name)
    pg_server.drop_database(name)


@pytest.fixture(scope="session")
def pg_template(pg_server: PgServer) -> str:
    """A database migrated to head once, copied per test (faster than migrating each)."""
    name = pg_server.create_database("netvirt_template")
    Database(pg_server.url(name)).dispose()
    return name


@pytest.fixture
def pg_migrated_url(pg_server: PgServer, pg_template: str) -> Iterator[str]:
    """A fresh database per test, already at the head revision."""
    name = pg_server.create_database(template=pg_template)
    yield pg_server.url(name)
    pg_server.drop_database(name)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'nb.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_db_url(request: pytest.FixtureRequest) -> str:
    """The URL of a new store on each backend in turn (PostgreSQL's already migrated)."""
    fixture = "sqlite_url" if request.param == "sqlite" else "pg_migrated_url"
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture
def any_db(any_db_url: str) -> Iterator[Database]:
    database = Database(any_db_url)
    yield database
    database.dispose()


@pytest.fixture
def db(any_db: Database) -> Database:
    """Override of the root ``db``: every integration test runs on both backends."""
    return any_db


@dataclass
class LiveServer:
    """A running API server and an admin token for it."""

    url: str
    db: Database
    token: str

    def client(self, **kwargs: object) -> httpx.Client:
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        return httpx.Client(
            base_url=self.url,
            headers={"X-Auth-Token": self.token},
            timeout=60.0,
            limits=limits,
            **kwargs,  # type: ignore[arg-type]
        )


@pytest.fixture
def live_server(db: Database) -> Iterator[LiveServer]:
    """uvicorn in a background thread (signal handlers are skipped off the main thread)."""
    with db.write() as session:
        token = identity.bootstrap(session)
    assert token is not None
    port = free_port()
    config = uvicorn.Config(
        create_app(db),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        ws="none",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive(), "uvicorn exited during startup"
        assert time.monotonic() < deadline, "uvicorn did not start within 10 s"
        time.sleep(0.01)
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", db, token["token"])
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        assert not thread.is_alive(), "uvicorn did not stop"
