"""Alembic migrations: head equals the models, upgrades keep data, downgrade is reversible.

The schema is only ever created by migrations (never ``create_all``), so a
model change without a migration would show up here as a diff between the
migrated database and ``Base.metadata`` on each backend.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from fastapi.testclient import TestClient
from sqlalchemy import inspect, select

from netvirt.api.app import create_app
from netvirt.northbound import identity
from netvirt.northbound.db import Database, alembic_config
from netvirt.northbound.schema import Base, Meta

if TYPE_CHECKING:  # see test_store.py: annotation only
    from conftest import Api


def schema_diffs(db: Database) -> list[Any]:
    with db.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(ctx, Base.metadata))


def current_revision(db: Database) -> str | None:
    with db.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision(db: Database) -> str | None:
    return ScriptDirectory.from_config(alembic_config(db.engine)).get_current_head()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_url(request: pytest.FixtureRequest) -> str:
    """An empty database (no tables at all) on each backend."""
    url: str = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")
    return url


def test_upgrade_of_empty_database_matches_models(empty_url: str) -> None:
    db = Database(empty_url, migrate=False)
    try:
        assert inspect(db.engine).get_table_names() == []
        db.upgrade()
        assert current_revision(db) == head_revision(db)
        assert schema_diffs(db) == []
        tables = set(inspect(db.engine).get_table_names())
        assert set(Base.metadata.tables) <= tables
        assert db.generation() == 0
    finally:
        db.dispose()


def test_reopen_keeps_data_and_upgrade_is_idempotent(db: Database, admin: Api) -> None:
    net = admin.ok("POST", "/v2.0/networks", {"network": {"name": "kept"}})["network"]
    admin.ok("POST", "/v2.0/subnets", {"subnet": {"network_id": net["id"], "cidr": "10.7.0.0/24"}})
    kept_port = admin.ok("POST", "/v2.0/ports", {"port": {"network_id": net["id"]}})["port"]
    generation = db.generation()
    db.dispose()

    reopened = Database(db.url)
    try:
        reopened.upgrade()  # a second explicit upgrade is a no-op too
        assert current_revision(reopened) == head_revision(reopened)
        assert reopened.generation() == generation
        with TestClient(create_app(reopened), headers=admin.headers) as client:
            got = client.get(f"/v2.0/ports/{kept_port['id']}").json()["port"]
            assert got["fixed_ips"] == kept_port["fixed_ips"]
            assert got["mac_address"] == kept_port["mac_address"]
            names = [n["name"] for n in client.get("/v2.0/networks").json()["networks"]]
            assert names == ["kept"]
            # IPAM continues from the stored allocations, not from scratch
            resp = client.post("/v2.0/ports", json={"port": {"network_id": net["id"]}})
            assert resp.status_code == 201
            assert resp.json()["port"]["fixed_ips"][0]["ip_address"] == "10.7.0.3"
        with reopened.write() as session:
            assert identity.bootstrap(session) is None, "bootstrap must not mint a second token"
    finally:
        reopened.dispose()


def test_downgrade_to_base_then_upgrade(empty_url: str) -> None:
    db = Database(empty_url)
    try:
        with db.write() as session:
            identity.bootstrap(session)
        assert db.generation() == 1
        command.downgrade(alembic_config(db.engine), "base")
        assert current_revision(db) is None
        left = set(inspect(db.engine).get_table_names()) - {"alembic_version"}
        assert left == set()
        db.upgrade()
        assert current_revision(db) == head_revision(db)
        assert schema_diffs(db) == []
        with db.read() as session:
            assert session.execute(select(Meta.generation)).scalars().all() == [0]
    finally:
        db.dispose()
