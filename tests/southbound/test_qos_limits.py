"""QoS bandwidth limits on SB port bindings: compiled from the NB, carried by the wire."""

from __future__ import annotations

import json
from typing import Any

import pytest

from conftest import Api
from netvirt.northbound.db import Database
from netvirt.southbound import codec
from netvirt.southbound.diff import apply, diff
from netvirt.southbound.model import BandwidthLimit, PortBinding, SBState
from netvirt.southbound.source import SBDelta
from southbound.topo import compile_db, create, network, small_state

POLICIES = "/v2.0/qos/policies"


def policy(api: Api, name: str, *rules: dict[str, Any]) -> dict[str, Any]:
    created = create(api, POLICIES, "policy", {"name": name})
    for rule in rules:
        path = f"{POLICIES}/{created['id']}/bandwidth_limit_rules"
        api.ok("POST", path, {"bandwidth_limit_rule": rule})
    return created


def port(api: Api, net: dict[str, Any], name: str, **attrs: Any) -> dict[str, Any]:
    return create(api, "/v2.0/ports", "port", {"network_id": net["id"], "name": name, **attrs})


def binding(sb: SBState, port_id: str) -> PortBinding:
    return sb.ports[port_id]


@pytest.fixture
def scene(db: Database, alice: Api) -> dict[str, Any]:
    """A network with a policy, a port with its own, a port inheriting, a router port."""
    net_policy = policy(alice, "net", {"max_kbps": 10_000, "direction": "egress"})
    own = policy(
        alice,
        "own",
        {"max_kbps": 1000, "max_burst_kbps": 300, "direction": "egress"},
        {"max_kbps": 5000, "direction": "ingress"},
    )
    net, sub = network(alice, "web", "10.0.0.0/24", qos_policy_id=net_policy["id"])
    vm_own = port(alice, net, "own", qos_policy_id=own["id"])
    vm_net = port(alice, net, "inherits")
    router = create(alice, "/v2.0/routers", "router", {"name": "r"})
    iface = alice.ok(
        "PUT", f"/v2.0/routers/{router['id']}/add_router_interface", {"subnet_id": sub["id"]}
    )
    return {
        "net": net,
        "own_policy": own,
        "net_policy": net_policy,
        "vm_own": vm_own,
        "vm_net": vm_net,
        "router_port": iface["port_id"],
    }


def test_ports_carry_their_effective_limits(db: Database, scene: dict[str, Any]) -> None:
    sb = compile_db(db)
    own = binding(sb, scene["vm_own"]["id"])
    assert own.egress_limit == BandwidthLimit(1000, 300)
    assert own.ingress_limit == BandwidthLimit(5000, 4000)  # burst 0: 80 % of the rate
    inherited = binding(sb, scene["vm_net"]["id"])
    assert inherited.egress_limit == BandwidthLimit(10_000, 8000)
    assert inherited.ingress_limit is None
    router_side = binding(sb, scene["router_port"])
    assert router_side.type == "patch"
    assert (router_side.egress_limit, router_side.ingress_limit) == (None, None)


def test_limits_follow_rule_changes_without_touching_flows(
    db: Database, alice: Api, scene: dict[str, Any]
) -> None:
    old = compile_db(db)
    rules = alice.ok("GET", f"{POLICIES}/{scene['net_policy']['id']}/bandwidth_limit_rules")
    rule = rules["bandwidth_limit_rules"][0]
    path = f"{POLICIES}/{scene['net_policy']['id']}/bandwidth_limit_rules/{rule['id']}"
    alice.ok("PUT", path, {"bandwidth_limit_rule": {"max_kbps": 20_000, "max_burst_kbps": 1}})
    new = compile_db(db)
    delta = diff(old, new)
    assert [p.name for p in delta.ports if isinstance(p, PortBinding)] == [scene["vm_net"]["id"]]
    assert not delta.flows  # limits are not flows
    assert not delta.flows_removed
    assert binding(new, scene["vm_net"]["id"]).egress_limit == BandwidthLimit(20_000, 1)
    back = codec.decode(json.loads(json.dumps(codec.encode_delta(delta, old, new))))
    assert isinstance(back, SBDelta)
    assert apply(codec.decode_state(codec.encode_state(old)), back) == codec.wire_form(new)


def test_detaching_the_policy_removes_the_limits(
    db: Database, alice: Api, scene: dict[str, Any]
) -> None:
    alice.ok("PUT", f"/v2.0/ports/{scene['vm_own']['id']}", {"port": {"qos_policy_id": None}})
    sb = compile_db(db)
    # the port's own policy is gone, so the network's applies now
    assert binding(sb, scene["vm_own"]["id"]).egress_limit == BandwidthLimit(10_000, 8000)
    alice.ok("PUT", f"/v2.0/networks/{scene['net']['id']}", {"network": {"qos_policy_id": None}})
    sb = compile_db(db)
    assert binding(sb, scene["vm_own"]["id"]).egress_limit is None


def test_a_zero_rate_is_no_limit(db: Database, alice: Api) -> None:
    zero = policy(alice, "zero", {"max_kbps": 0, "direction": "ingress"})
    net, _ = network(alice, "n", "10.1.0.0/24")
    vm = port(alice, net, "vm", qos_policy_id=zero["id"])
    assert binding(compile_db(db), vm["id"]).ingress_limit is None


def test_limits_round_trip_and_ports_without_them_stay_compact(
    db: Database, scene: dict[str, Any]
) -> None:
    sb = compile_db(db)
    data = json.loads(json.dumps(codec.encode_state(sb)))
    by_name = {p["name"]: p for p in data["ports"]}
    assert by_name[scene["vm_own"]["id"]]["qos"] == {
        "egress": {"max_kbps": 1000, "max_burst_kbps": 300},
        "ingress": {"max_kbps": 5000, "max_burst_kbps": 4000},
    }
    assert "qos" not in by_name[scene["router_port"]]
    assert codec.decode_state(data) == codec.wire_form(sb)


@pytest.mark.parametrize(
    "qos",
    [
        {"egress": {"max_kbps": 0, "max_burst_kbps": 1}},
        {"ingress": {"max_kbps": 10, "max_burst_kbps": -1}},
        {"egress": {"max_kbps": 10}},
        {"egress": "fast"},
    ],
)
def test_bad_limits_are_codec_errors(qos: Any) -> None:
    data = json.loads(json.dumps(codec.encode_state(small_state(key_a=5))))
    data["ports"][0]["qos"] = qos
    with pytest.raises(codec.CodecError):
        codec.decode_state(data)


def test_a_document_without_qos_decodes_to_no_limits() -> None:
    """States from a server that predates limits still decode (the key is optional)."""
    sb = small_state(key_a=5)
    data = json.loads(json.dumps(codec.encode_state(sb)))
    assert all("qos" not in p for p in data["ports"])
    back = codec.decode_state(data)
    assert all(p.egress_limit is None and p.ingress_limit is None for p in back.ports.values())
