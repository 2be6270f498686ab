"""Per-chassis views: a chassis gets the flows of the datapaths it needs, deltas follow
datapaths into and out of its view, and applying view deltas to a view snapshot gives
the view of the newest state."""

from __future__ import annotations

from conftest import Api
from netvirt.compiler.lflow import LogicalFlow
from netvirt.southbound.diff import apply
from netvirt.southbound.memory import InMemorySB
from netvirt.southbound.model import SBState
from netvirt.southbound.source import SBDelta
from southbound.topo import create, network


def _port(api: Api, net: str, name: str, host: str, **extra: object) -> str:
    body = {"network_id": net, "name": name, "binding:host_id": host, **extra}
    return str(create(api, "/v2.0/ports", "port", body)["id"])


def _dps(flows: list[LogicalFlow]) -> set[int]:
    return {f.datapath for f in flows}


def _key(state: SBState, net_id: str) -> int:
    return state.datapath_by_name(net_id).key


def test_view_has_only_the_chassis_datapaths(service: InMemorySB, admin: Api) -> None:
    a, _ = network(admin, "a", "10.1.0.0/24")
    b, _ = network(admin, "b", "10.2.0.0/24")
    _port(admin, a["id"], "vm1", "hv1")
    _port(admin, b["id"], "vm2", "hv2")
    whole = service.snapshot()
    view = service.snapshot("hv1")
    assert _dps(view.flows) == {_key(whole, a["id"])}
    assert view.flows == [f for f in whole.flows if f.datapath == _key(whole, a["id"])]
    assert view.ports == whole.ports  # every binding, to tunnel to remote ports
    assert _dps(service.snapshot("hv3").flows) == set()


def test_deltas_bring_a_datapath_into_the_view_and_take_it_out(
    service: InMemorySB, admin: Api
) -> None:
    a, _ = network(admin, "a", "10.1.0.0/24")
    b, _ = network(admin, "b", "10.2.0.0/24")
    _port(admin, a["id"], "vm1", "hv1")
    mirror = service.snapshot("hv1")
    key_b = _key(mirror, b["id"])
    assert key_b not in _dps(mirror.flows)
    moved = _port(admin, b["id"], "vm2", "hv1")  # b enters hv1's view
    change = service.changes(mirror.generation, 1.0, "hv1")
    assert isinstance(change, SBDelta)
    mirror = apply(mirror, change)
    assert key_b in _dps(mirror.flows)
    assert mirror.flows == service.snapshot("hv1").flows
    admin.ok("PUT", f"/v2.0/ports/{moved}", {"port": {"binding:host_id": "hv2"}})  # b leaves
    change = service.changes(mirror.generation, 1.0, "hv1")
    assert isinstance(change, SBDelta)
    assert any(f.datapath == key_b for f in change.flows_removed)  # type: ignore[attr-defined]
    mirror = apply(mirror, change)
    assert key_b not in _dps(mirror.flows)
    assert mirror.flows == service.snapshot("hv1").flows


def test_a_port_change_elsewhere_sends_no_flows(service: InMemorySB, admin: Api) -> None:
    a, _ = network(admin, "a", "10.1.0.0/24")
    b, _ = network(admin, "b", "10.2.0.0/24")
    _port(admin, a["id"], "vm1", "hv1")
    mirror = service.snapshot("hv1")
    _port(admin, b["id"], "vm2", "hv2", security_groups=[])  # in no remote group of vm1's
    change = service.changes(mirror.generation, 1.0, "hv1")
    assert isinstance(change, SBDelta)
    assert not change.flows
    assert not change.flows_removed
    assert len(change.ports) == 1  # the new remote port's binding
    assert apply(mirror, change).flows == service.snapshot("hv1").flows


def test_routes_serve_views(host: Api, admin: Api) -> None:
    a, _ = network(admin, "a", "10.1.0.0/24")
    b, _ = network(admin, "b", "10.2.0.0/24")
    _port(admin, a["id"], "vm1", "hv1")
    _port(admin, b["id"], "vm2", "hv2")
    whole = host.ok("GET", "/v2.0/netvirt/sb/snapshot")
    view = host.ok("GET", "/v2.0/netvirt/sb/snapshot?chassis=hv1")
    assert 0 < len(view["flows"]["rows"]) < len(whole["flows"]["rows"])
