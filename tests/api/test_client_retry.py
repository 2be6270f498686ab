"""The API client retries an idempotent request once when the server dropped a kept-alive
connection just as the request went out (what ended the 10k-port benchmark runs)."""

from __future__ import annotations

import httpx
import pytest

from netvirt.api.client import ApiUnreachable, NetvirtClient


def _flaky(failures: int) -> tuple[httpx.MockTransport, list[str]]:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.method)
        if len(seen) <= failures:
            raise httpx.ReadError("connection closed", request=request)
        return httpx.Response(200, json={"nb_generation": 7})

    return httpx.MockTransport(handler), seen


def test_get_is_retried_once_on_a_dropped_connection() -> None:
    transport, seen = _flaky(1)
    with NetvirtClient("http://nv.test", "t", transport=transport) as client:
        assert client.request("GET", "/v2.0/netvirt/status") == {"nb_generation": 7}
    assert seen == ["GET", "GET"]


def test_a_second_drop_is_reported() -> None:
    transport, seen = _flaky(2)
    with (
        NetvirtClient("http://nv.test", "t", transport=transport) as client,
        pytest.raises(ApiUnreachable),
    ):
        client.request("GET", "/v2.0/netvirt/status")
    assert len(seen) == 2


def test_post_is_not_retried() -> None:
    """A create may have happened: sending it again could create a second object."""
    transport, seen = _flaky(1)
    with (
        NetvirtClient("http://nv.test", "t", transport=transport) as client,
        pytest.raises(ApiUnreachable),
    ):
        client.request("POST", "/v2.0/networks", json={"network": {}})
    assert seen == ["POST"]
