"""Networks: defaults, VNI allocation, admin-only attributes, deletion rules."""

from __future__ import annotations

from conftest import Api


def test_create_network_defaults_and_unique_vni(admin: Api) -> None:
    a = admin.ok("POST", "/v2.0/networks", {"network": {"name": "a"}})["network"]
    b = admin.ok("POST", "/v2.0/networks", {"network": {"name": "b"}})["network"]
    assert a["status"] == "ACTIVE"
    assert a["mtu"] == 1442
    assert a["port_security_enabled"] is True
    assert a["router:external"] is False
    assert a["provider:network_type"] == "geneve"
    assert 1 <= a["provider:segmentation_id"] < 1 << 24
    assert a["provider:segmentation_id"] != b["provider:segmentation_id"]


def test_member_cannot_see_provider_attributes_or_set_admin_fields(alice: Api) -> None:
    net = alice.ok("POST", "/v2.0/networks", {"network": {"name": "x"}})["network"]
    assert "provider:segmentation_id" not in net
    assert net["project_id"] == alice.project_id
    status, body = alice.post("/v2.0/networks", {"network": {"shared": True}})
    assert status == 403
    assert body["NeutronError"]["type"] == "PolicyNotAuthorized"
    status, _ = alice.post("/v2.0/networks", {"network": {"router:external": True}})
    assert status == 403


def test_duplicate_segmentation_id_conflicts(admin: Api) -> None:
    admin.ok("POST", "/v2.0/networks", {"network": {"provider:segmentation_id": 77}})
    status, body = admin.post("/v2.0/networks", {"network": {"provider:segmentation_id": 77}})
    assert status == 409
    assert body["NeutronError"]["type"] == "SegmentationIdInUse"


def test_unknown_field_and_bad_values_are_400(admin: Api) -> None:
    status, body = admin.post("/v2.0/networks", {"network": {"nmae": "typo"}})
    assert status == 400
    assert "nmae" in body["NeutronError"]["message"]
    status, body = admin.post("/v2.0/networks", {"network": {"mtu": 20}})
    assert status == 400
    assert "mtu" in body["NeutronError"]["message"]
    status, body = admin.post("/v2.0/networks", {"network": {"provider:segmentation_id": 1 << 24}})
    assert status == 400


def test_update_and_delete_network(admin: Api) -> None:
    net = admin.ok("POST", "/v2.0/networks", {"network": {"name": "old"}})["network"]
    upd = admin.ok("PUT", f"/v2.0/networks/{net['id']}", {"network": {"name": "new"}})["network"]
    assert upd["name"] == "new"
    assert upd["revision_number"] == net["revision_number"] + 1
    admin.ok("DELETE", f"/v2.0/networks/{net['id']}")
    status, body = admin.get(f"/v2.0/networks/{net['id']}")
    assert status == 404
    assert body["NeutronError"]["type"] == "NetworkNotFound"


def test_network_with_ports_cannot_be_deleted(admin: Api) -> None:
    net = admin.ok("POST", "/v2.0/networks", {"network": {}})["network"]
    admin.ok("POST", "/v2.0/ports", {"port": {"network_id": net["id"]}})
    status, body = admin.delete(f"/v2.0/networks/{net['id']}")
    assert status == 409
    assert body["NeutronError"]["type"] == "NetworkInUse"


def test_list_filters_fields_and_pagination(admin: Api) -> None:
    ids = [
        admin.ok("POST", "/v2.0/networks", {"network": {"name": f"n{i}"}})["network"]["id"]
        for i in range(5)
    ]
    status, body = admin.get("/v2.0/networks", name="n3")
    assert [n["id"] for n in body["networks"]] == [ids[3]]
    status, body = admin.get("/v2.0/networks", fields=["id", "name"])
    assert all(set(n) == {"id", "name"} for n in body["networks"])
    seen: list[str] = []
    params: dict[str, object] = {"limit": 2}
    while True:
        status, body = admin.get("/v2.0/networks", **params)
        assert status == 200
        seen += [n["id"] for n in body["networks"]]
        links = body.get("networks_links", [])
        if not links:
            break
        params = {"limit": 2, "marker": body["networks"][-1]["id"]}
    assert sorted(seen) == sorted(ids)
    assert len(seen) == len(set(seen))


def test_generation_header_increases(admin: Api) -> None:
    r1 = admin.client.post("/v2.0/networks", json={"network": {}}, headers=admin.headers)
    r2 = admin.client.post("/v2.0/networks", json={"network": {}}, headers=admin.headers)
    assert int(r2.headers["X-Netvirt-Generation"]) > int(r1.headers["X-Netvirt-Generation"])
    status, body = admin.get("/v2.0/netvirt/status")
    assert body["status"]["nb_generation"] == int(r2.headers["X-Netvirt-Generation"])


def test_requests_without_valid_token_are_401(client) -> None:  # type: ignore[no-untyped-def]
    assert client.get("/v2.0/networks").status_code == 401
    resp = client.get("/v2.0/networks", headers={"X-Auth-Token": "nope"})
    assert resp.status_code == 401
    assert resp.json()["NeutronError"]["type"] == "HTTPUnauthorized"


def test_if_match_revision_constraint(admin: Api) -> None:
    net = admin.ok("POST", "/v2.0/networks", {"network": {}})["network"]
    url = f"/v2.0/networks/{net['id']}"
    stale = {"If-Match": f"revision_number={net['revision_number']}", **admin.headers}
    ok = admin.client.put(url, json={"network": {"name": "a"}}, headers=stale)
    assert ok.status_code == 200
    lost = admin.client.put(url, json={"network": {"name": "b"}}, headers=stale)
    assert lost.status_code == 412
    assert lost.json()["NeutronError"]["type"] == "RevisionNumberConstraintFailed"
    assert admin.ok("GET", url)["network"]["name"] == "a"
    bad = admin.client.delete(url, headers={"If-Match": "etag", **admin.headers})
    assert bad.status_code == 400
    assert admin.client.delete(url, headers=stale).status_code == 412
