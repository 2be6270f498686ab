"""The OpenAPI schema is part of the contract: any change to it must be deliberate.

Regenerate after an intended API change with:
    NETVIRT_UPDATE_SNAPSHOTS=1 python -m pytest tests/api/test_openapi.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from fastapi.testclient import TestClient

SNAPSHOT = Path(__file__).with_name("openapi.snapshot.json")


def test_openapi_schema_matches_snapshot(client: TestClient) -> None:
    resp = client.get("/openapi.json")
    assert resp.status_code == 200
    schema = resp.json()
    rendered = json.dumps(schema, indent=1, sort_keys=True) + "\n"
    if os.environ.get("NETVIRT_UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.write_text(rendered)
    assert SNAPSHOT.exists(), "no snapshot: run with NETVIRT_UPDATE_SNAPSHOTS=1 once"
    assert rendered == SNAPSHOT.read_text(), (
        "OpenAPI schema changed; if intended, regenerate with NETVIRT_UPDATE_SNAPSHOTS=1"
    )


def test_openapi_covers_every_resource(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/v2.0/networks",
        "/v2.0/subnets",
        "/v2.0/ports",
        "/v2.0/extensions",
        "/v2.0/netvirt/status",
    ):
        assert path in paths, path
