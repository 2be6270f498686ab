"""Shared fixtures: a fresh NB database per test, the API app, and clients per project.

``api`` is a small wrapper over Starlette's TestClient that sends a token and
turns responses into (status, json) so tests read like the API reference.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings

from netvirt.api.app import create_app
from netvirt.northbound import identity
from netvirt.northbound.context import Context
from netvirt.northbound.db import Database

# Speed is measured in bench/, never by a test: a property test's example may take as long as
# the shared 2-core machine makes it (Hypothesis's 200 ms deadline and its slow-generation
# health check failed tests at random under load, never for a wrong result). Tests that need
# a bound on time state it themselves.
settings.register_profile("netvirt", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("netvirt")


class Api:
    """A TestClient bound to one token."""

    def __init__(self, client: TestClient, token: str, project_id: str) -> None:
        self.client = client
        self.token = token
        self.project_id = project_id
        self.headers = {"X-Auth-Token": token}

    def request(self, method: str, path: str, body: Any = None, **params: Any) -> tuple[int, Any]:
        resp = self.client.request(
            method, path, json=body, headers=self.headers, params=params or None
        )
        data = resp.json() if resp.content else None
        return resp.status_code, data

    def get(self, path: str, **params: Any) -> tuple[int, Any]:
        return self.request("GET", path, **params)

    def post(self, path: str, body: Any, **params: Any) -> tuple[int, Any]:
        return self.request("POST", path, body, **params)

    def put(self, path: str, body: Any, **params: Any) -> tuple[int, Any]:
        return self.request("PUT", path, body, **params)

    def delete(self, path: str, **params: Any) -> tuple[int, Any]:
        return self.request("DELETE", path, **params)

    def ok(self, method: str, path: str, body: Any = None, expect: int | None = None) -> Any:
        """Call and assert success; return the JSON body."""
        status, data = self.request(method, path, body)
        want = expect or {"POST": 201, "DELETE": 204}.get(method, 200)
        assert status == want, f"{method} {path} -> {status} {data}"
        return data


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'nb.db'}")
    yield database
    database.dispose()


@pytest.fixture
def client(db: Database) -> Iterator[TestClient]:
    with TestClient(create_app(db)) as test_client:
        yield test_client


@pytest.fixture
def admin(db: Database, client: TestClient) -> Api:
    with db.write() as session:
        token = identity.bootstrap(session)
    assert token is not None
    return Api(client, token["token"], "admin")


@pytest.fixture
def make_project(db: Database, client: TestClient) -> Callable[[str], Api]:
    """Create a project with a member token and return a client acting as it."""

    def make(name: str) -> Api:
        with db.write() as session:
            project = identity.create_project(session, Context.admin(), name)
            token = identity.create_token(session, Context.admin(), project["id"], "member")
        return Api(client, token["token"], project["id"])

    return make


@pytest.fixture
def alice(make_project: Callable[[str], Api]) -> Api:
    return make_project("alice")


@pytest.fixture
def bob(make_project: Callable[[str], Api]) -> Api:
    return make_project("bob")
