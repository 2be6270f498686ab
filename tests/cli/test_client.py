"""NetvirtClient on its own: errors, pagination, name resolution, wait, URL safety."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from conftest import Api
from netvirt.api.client import ApiError, ApiUnreachable, NetvirtClient


def mock(handler: Any) -> NetvirtClient:
    return NetvirtClient("http://nv.test", "tok", transport=httpx.MockTransport(handler))


@pytest.fixture
def nc(client: TestClient, admin: Api) -> NetvirtClient:
    return NetvirtClient(http=client, token=admin.token)


def test_api_error_carries_neutron_type_message_and_status(nc: NetvirtClient) -> None:
    with pytest.raises(ApiError) as info:
        nc.get_network("0d5c6a9e-0000-4000-8000-000000000000")
    err = info.value
    assert err.status == 404
    assert err.type == "NetworkNotFound"
    assert "0d5c6a9e-0000-4000-8000-000000000000" in err.message
    assert str(err) == err.message


def test_validation_error_is_400_with_the_server_message(nc: NetvirtClient) -> None:
    net = nc.create_network(name="n")
    with pytest.raises(ApiError) as info:
        nc.create_subnet(network_id=net["id"], cidr="10.0.0.300/24")
    assert info.value.status == 400
    assert "cidr" in info.value.message
    assert "10.0.0.300/24" in info.value.message


def test_missing_token_is_401(client: TestClient) -> None:
    with pytest.raises(ApiError) as info:
        NetvirtClient(http=client).list_networks()
    assert (info.value.status, info.value.type) == (401, "HTTPUnauthorized")


def test_non_neutron_error_body_still_becomes_api_error() -> None:
    client = mock(lambda request: httpx.Response(502, text="Bad gateway from proxy\nmore"))
    with pytest.raises(ApiError) as info:
        client.list_networks()
    assert info.value.status == 502
    assert info.value.type == "HTTPError"
    assert info.value.message == "HTTP 502: Bad gateway from proxy"


def test_connection_refused_is_api_unreachable_with_status_0() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    with pytest.raises(ApiUnreachable) as info:
        mock(refuse).status()
    assert info.value.status == 0
    assert "connection refused" in info.value.message
    assert "http://nv.test" in info.value.message


def test_list_follows_next_links_until_the_last_page(nc: NetvirtClient, admin: Api) -> None:
    ids = {nc.create_network(name=f"p{i}")["id"] for i in range(5)}
    pages: list[str] = []
    original = nc.request

    def spy(method: str, path: str, **kwargs: Any) -> Any:
        pages.append(path)
        return original(method, path, **kwargs)

    nc.request = spy  # type: ignore[method-assign]
    nc.page_size = 2
    got = nc.list_networks()
    assert {n["id"] for n in got} == ids
    assert len(got) == 5
    assert len(pages) == 3  # 2 + 2 + 1


def test_list_stops_on_a_repeated_next_link() -> None:
    """A server that keeps sending the same link must not loop forever."""

    def handler(request: httpx.Request) -> httpx.Response:
        body = {
            "networks": [{"id": "a"}],
            "networks_links": [{"rel": "next", "href": "http://nv.test/v2.0/networks?marker=a"}],
        }
        return httpx.Response(200, json=body)

    assert len(mock(handler).list_networks()) == 2


def test_filters_spell_booleans_like_neutron() -> None:
    seen: list[httpx.URL] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        return httpx.Response(200, json={"networks": []})

    mock(handler).list_networks(**{"router:external": True, "name": ["a", "b"]})
    assert seen[0].params.get("router:external") == "true"
    assert seen[0].params.get_list("name") == ["a", "b"]
    assert seen[0].path == "/v2.0/networks"


@given(ref=st.text(st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=40))
def test_a_reference_never_escapes_its_collection_path(ref: str) -> None:
    """Whatever a user types as an id stays one path segment under the collection."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"network": {"id": "x"}})

    mock(handler).get_network(ref)
    raw = seen[0].url.raw_path.decode().split("?")[0]
    assert raw.startswith("/v2.0/networks/")
    assert "/" not in raw.removeprefix("/v2.0/networks/")


def test_write_sends_wait_and_records_realization(nc: NetvirtClient) -> None:
    nc.wait_timeout = 0  # nothing compiles in this test: the server answers "timeout" at once
    nc.create_network(name="w", wait="compiled")
    assert nc.last_realization == "timeout"
    nc.create_network(name="v")
    assert nc.last_realization == "not-requested"


def test_client_default_wait_applies_to_writes_only() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.method == "GET":
            return httpx.Response(200, json={"networks": []})
        return httpx.Response(201, json={"network": json.loads(request.content)["network"]})

    client = mock(handler)
    client.wait = "installed"
    client.list_networks()
    client.create_network(name="x")
    assert "wait" not in seen[0].url.params
    assert seen[1].url.params["wait"] == "installed"
    assert seen[1].headers["X-Auth-Token"] == "tok"


def test_find_by_id_by_name_ambiguous_and_missing(nc: NetvirtClient) -> None:
    web = nc.create_network(name="web")
    assert nc.find_network(web["id"])["name"] == "web"
    assert nc.find_network("web")["id"] == web["id"]
    nc.create_network(name="twin")
    nc.create_network(name="twin")
    with pytest.raises(ApiError) as info:
        nc.find_network("twin")
    assert (info.value.status, info.value.type) == (409, "AmbiguousName")
    with pytest.raises(ApiError) as info:
        nc.find_network("nope")
    assert (info.value.status, info.value.type) == (404, "NetworkNotFound")


def test_find_respects_tenancy(nc: NetvirtClient, client: TestClient, alice: Api) -> None:
    nc.create_network(name="secret")
    as_alice = NetvirtClient(http=client, token=alice.token)
    with pytest.raises(ApiError) as info:
        as_alice.find_network("secret")
    assert info.value.status == 404


def test_projects_tokens_whoami_and_status(nc: NetvirtClient, client: TestClient) -> None:
    project = nc.create_project("carol", "test project")
    assert nc.find_project("carol")["id"] == project["id"]
    token = nc.create_token("carol", role="member")
    assert token["project_id"] == project["id"]
    carol = NetvirtClient(http=client, token=token["token"])
    assert carol.whoami() == {"project_id": project["id"], "role": "member"}
    status = carol.status()
    assert status["nb_generation"] >= 1
    assert {"compiled_generation", "installed_generation", "hosts"} <= set(status)


def test_owned_client_is_closed_but_a_borrowed_one_is_not(client: TestClient) -> None:
    owned = NetvirtClient("http://nv.test")
    with owned:
        pass
    assert owned.http.is_closed
    with NetvirtClient(http=client):
        pass
    assert not client.is_closed


def test_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NETVIRT_URL", "http://example.test:1234/")
    monkeypatch.setenv("NETVIRT_TOKEN", "s3cret")
    with NetvirtClient.from_env() as client:
        assert client.base_url == "http://example.test:1234"
        assert client.token == "s3cret"
    monkeypatch.delenv("NETVIRT_URL")
    with NetvirtClient.from_env() as client:
        assert client.base_url == "http://127.0.0.1:9696"
