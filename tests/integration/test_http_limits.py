"""Body limits and malformed requests over a real HTTP server.

TestClient skips the wire; uvicorn does not, so this is where an oversized
or broken request is shown to get a Neutron-shaped error and not a hang, a
reset connection or a 500.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from integration.conftest import LiveServer
from netvirt.northbound.db import Database

TWO_MIB = 2 << 20


@pytest.fixture
def db(sqlite_url: str) -> Iterator[Database]:
    """HTTP framing does not depend on the store: one backend is enough here."""
    database = Database(sqlite_url)
    yield database
    database.dispose()


def neutron_error(resp: httpx.Response) -> str:
    body = resp.json()
    assert set(body) == {"NeutronError"}
    assert body["NeutronError"]["message"]
    error_type: str = body["NeutronError"]["type"]
    return error_type


def big_json() -> bytes:
    return b'{"network": {"name": "' + b"x" * TWO_MIB + b'"}}'


def test_two_mib_body_is_413(live_server: LiveServer) -> None:
    with live_server.client() as client:
        resp = client.post(
            "/v2.0/networks", content=big_json(), headers={"Content-Type": "application/json"}
        )
        assert resp.status_code == 413
        assert neutron_error(resp) == "HTTPRequestEntityTooLarge"
        # the server is still there and nothing was created
        assert client.get("/v2.0/networks").json() == {"networks": []}


def test_two_mib_chunked_body_is_413(live_server: LiveServer) -> None:
    """Without Content-Length the limit must still hold while the body streams in."""

    def chunks() -> Iterator[bytes]:
        data = big_json()
        for start in range(0, len(data), 64 << 10):
            yield data[start : start + (64 << 10)]

    with live_server.client() as client:
        resp = client.post(
            "/v2.0/networks", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert resp.status_code == 413
        assert neutron_error(resp) == "HTTPRequestEntityTooLarge"
        assert client.get("/v2.0/networks").json() == {"networks": []}


@pytest.mark.parametrize(
    "payload", [b'{"network": {', b"not json", b'{"network": {"name": "a",}}', b"\xff\xfe"]
)
def test_malformed_json_is_400(live_server: LiveServer, payload: bytes) -> None:
    with live_server.client() as client:
        resp = client.post(
            "/v2.0/networks", content=payload, headers={"Content-Type": "application/json"}
        )
        assert resp.status_code == 400
        assert neutron_error(resp) == "HTTPBadRequest"


def test_wrong_method_is_405(live_server: LiveServer) -> None:
    with live_server.client() as client:
        for method, path in (("PATCH", "/v2.0/networks"), ("POST", "/v2.0/networks/abc")):
            resp = client.request(method, path, json={"network": {}})
            assert resp.status_code == 405, (method, path)
            assert neutron_error(resp) == "HTTPMethodNotAllowed"
