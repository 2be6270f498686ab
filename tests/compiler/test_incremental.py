"""Incremental compile == full compile, over random sequences of NB changes.

Every step changes a copy of the previous snapshot (ports come and go, change
addresses and groups; rules name remote groups; networks, subnets and a router
change), compiles it incrementally from the previous result and from scratch,
and requires the two SB states to be equal — flows with their provenance and
in the same order, port bindings, groups, datapaths and service monitors.
"""

from __future__ import annotations

import copy
from dataclasses import fields
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from netvirt.compiler.compile import compile_nb
from netvirt.compiler.incremental import Compiled, compile_full, compile_incremental
from netvirt.compiler.lflow import LogicalFlow
from netvirt.compiler.nb import NBSnapshot
from netvirt.southbound.model import SBState

from .conftest import NBBuilder, make_id

NETS = 3


def world() -> NBSnapshot:
    """Three networks (v4 + v6), a router on two of them, three groups (one naming
    another as remote group), a few ports."""
    nbb = NBBuilder()
    nets = []
    for i in range(NETS):
        net = nbb.network(f"n{i}", 100 + i)
        v4 = nbb.subnet(net, f"s{i}", f"10.{i}.0.0/24")
        nbb.subnet(net, f"s{i}v6", f"2001:db8:{i}::/64")
        nets.append((net, v4))
    default = nbb.default_group()
    web = nbb.security_group("web")
    nbb.rule(web, "ingress", protocol="tcp", port_range_min=80, port_range_max=80)
    admin = nbb.security_group("admin", stateful=False)
    nbb.rule(admin, "ingress", remote_group_id=web["id"])
    router = nbb.router("r1")
    for net, v4 in nets[:2]:
        nbb.router_interface(router, net, v4)
    for i, (net, v4) in enumerate(nets):
        nbb.port(net, f"vm{i}", [(v4, f"10.{i}.0.10")], sgs=[default, web])
    return nbb.snapshot()


def _groups(nb: NBSnapshot, picks: list[int]) -> list[str]:
    ids = sorted(g["id"] for g in nb.security_groups)
    return sorted({ids[p % len(ids)] for p in picks})


def _vms(nb: NBSnapshot) -> list[dict[str, Any]]:
    return [p for p in nb.ports if p["device_owner"] == "compute:nova"]


def apply_op(nb: NBSnapshot, op: tuple[Any, ...], serial: int) -> None:
    """Change ``nb`` in place (a copy of the previous snapshot)."""
    kind = op[0]
    vms = _vms(nb)
    if kind == "add_port":
        _, n, host, picks, secured = op
        net = nb.networks[n % len(nb.networks)]
        v4 = next(s for s in nb.subnets if s["network_id"] == net["id"] and s["ip_version"] == 4)
        prefix = v4["cidr"].split("/")[0].rsplit(".", 1)[0]
        port = copy.deepcopy(vms[0]) if vms else None
        if port is None:
            return
        port |= {
            "id": make_id("port", f"p{serial}"),
            "name": f"p{serial}",
            "network_id": net["id"],
            "mac_address": f"fa:16:3e:01:{serial >> 8 & 255:02x}:{serial & 255:02x}",
            "fixed_ips": [{"subnet_id": v4["id"], "ip_address": f"{prefix}.{20 + host}"}],
            "security_groups": _groups(nb, picks),
            "port_security_enabled": secured,
        }
        nb.ports.append(port)
    elif kind == "remove_port" and vms:
        nb.ports.remove(vms[op[1] % len(vms)])
    elif kind == "port_groups" and vms:
        vms[op[1] % len(vms)]["security_groups"] = _groups(nb, op[2])
    elif kind == "port_ip" and vms:
        port = vms[op[1] % len(vms)]
        fixed = port["fixed_ips"][0]
        head = fixed["ip_address"].rsplit(".", 1)[0]
        port["fixed_ips"] = [fixed | {"ip_address": f"{head}.{100 + op[2]}"}]
    elif kind == "port_pair" and vms:
        vms[op[1] % len(vms)]["allowed_address_pairs"] = [
            {"ip_address": f"192.0.2.{op[2]}/32", "mac_address": "fa:16:3e:99:00:01"}
        ]
    elif kind == "status" and vms:
        port = vms[op[1] % len(vms)]
        port["status"] = "DOWN" if port["status"] == "ACTIVE" else "ACTIVE"
        port["binding:host_id"] = f"hv{op[2]}"
    elif kind == "rule":
        groups = sorted(nb.security_groups, key=lambda g: g["id"])
        group, remote = groups[op[1] % len(groups)], groups[op[2] % len(groups)]
        group["security_group_rules"].append(
            {
                "id": make_id("rule", f"r{serial}"),
                "project_id": group["project_id"],
                "security_group_id": group["id"],
                "direction": "ingress" if op[3] else "egress",
                "ethertype": "IPv4",
                "protocol": "udp",
                "port_range_min": 53,
                "port_range_max": 53,
                "remote_ip_prefix": None,
                "remote_group_id": remote["id"],
            }
        )
    elif kind == "drop_rule":
        groups = sorted(nb.security_groups, key=lambda g: g["id"])
        rules = groups[op[1] % len(groups)]["security_group_rules"]
        if rules:
            rules.pop(op[2] % len(rules))
    elif kind == "network":
        net = nb.networks[op[1] % len(nb.networks)]
        net["mtu"] = 1400 + op[2]
        net["port_security_enabled"] = bool(op[2] % 2)
    elif kind == "subnet_dns":
        subnet = nb.subnets[op[1] % len(nb.subnets)]
        subnet["dns_nameservers"] = [f"10.9.9.{op[2]}"]
    elif kind == "router":
        nb.routers[0]["name"] = f"r{serial}"


OPS = st.one_of(
    st.tuples(
        st.just("add_port"),
        st.integers(0, NETS - 1),
        st.integers(0, 60),
        st.lists(st.integers(0, 2), max_size=2),
        st.booleans(),
    ),
    st.tuples(st.just("remove_port"), st.integers(0, 20)),
    st.tuples(st.just("port_groups"), st.integers(0, 20), st.lists(st.integers(0, 2), max_size=3)),
    st.tuples(st.just("port_ip"), st.integers(0, 20), st.integers(0, 100)),
    st.tuples(st.just("port_pair"), st.integers(0, 20), st.integers(1, 200)),
    st.tuples(st.just("status"), st.integers(0, 20), st.integers(0, 3)),
    st.tuples(st.just("rule"), st.integers(0, 2), st.integers(0, 2), st.booleans()),
    st.tuples(st.just("drop_rule"), st.integers(0, 2), st.integers(0, 5)),
    st.tuples(st.just("network"), st.integers(0, NETS - 1), st.integers(0, 50)),
    st.tuples(st.just("subnet_dns"), st.integers(0, 5), st.integers(1, 200)),
    st.tuples(st.just("router")),
)


def _full(flow: LogicalFlow) -> tuple[object, ...]:
    return tuple(getattr(flow, f.name) for f in fields(flow))


def assert_same(got: SBState, want: SBState) -> None:
    assert [_full(f) for f in got.flows] == [_full(f) for f in want.flows]
    assert got.ports == want.ports
    assert got.groups == want.groups
    assert got.datapaths == want.datapaths
    assert got.monitors == want.monitors


@settings(max_examples=60, deadline=None)
@given(st.lists(OPS, min_size=1, max_size=8))
def test_incremental_equals_full(ops: list[tuple[Any, ...]]) -> None:
    prev: Compiled = compile_full(world())
    for serial, op in enumerate(ops):
        nb = copy.deepcopy(prev.nb)
        apply_op(nb, op, serial)
        got = compile_incremental(prev, nb)
        assert_same(got.sb, compile_nb(copy.deepcopy(nb)))
        assert_dirty_bindings_named(prev, got)
        prev = got


def assert_dirty_bindings_named(prev: Compiled, got: Compiled) -> None:
    """Every binding that differs from the previous compile's is among those the compile
    says it rebuilt (the southbound service compares only those)."""
    if got.ports_dirty is None:
        return
    old, new = prev.sb.ports, got.sb.ports
    differ = {n for n in old.keys() | new.keys() if old.get(n) != new.get(n)}
    assert differ <= got.ports_dirty


def test_port_add_rebuilds_its_switch_only() -> None:
    """A port without groups on one network rebuilds that switch and its router."""
    prev = compile_full(world())
    nb = copy.deepcopy(prev.nb)
    apply_op(nb, ("add_port", 2, 5, [], False), 1)
    nb.ports[-1]["security_groups"] = []
    got = compile_incremental(prev, nb)
    assert got.dirty == frozenset({102})  # n2 has no router
    assert_same(got.sb, compile_nb(copy.deepcopy(nb)))


def test_remote_group_member_rebuilds_every_user_of_the_rule() -> None:
    """Joining ``web`` changes the ``admin`` rule (remote group web) wherever admin is used."""
    prev = compile_full(world())
    nb = copy.deepcopy(prev.nb)
    admin = next(g for g in nb.security_groups if g["name"] == "admin")
    web = next(g for g in nb.security_groups if g["name"] == "web")
    _vms(nb)[2]["security_groups"] = [admin["id"]]  # admin used on n2
    prev = compile_incremental(prev, nb)
    nb = copy.deepcopy(prev.nb)
    apply_op(nb, ("add_port", 0, 7, [], True), 2)
    nb.ports[-1]["security_groups"] = [web["id"]]
    got = compile_incremental(prev, nb)
    assert got.dirty is not None
    assert {100, 102} <= got.dirty
    assert_same(got.sb, compile_nb(copy.deepcopy(nb)))


def test_status_change_rebuilds_bindings_not_flows() -> None:
    prev = compile_full(world())
    nb = copy.deepcopy(prev.nb)
    apply_op(nb, ("status", 2, 1), 4)
    got = compile_incremental(prev, nb)
    assert got.dirty == frozenset()
    assert_same(got.sb, compile_nb(copy.deepcopy(nb)))


def test_router_change_is_a_full_compile() -> None:
    prev = compile_full(world())
    nb = copy.deepcopy(prev.nb)
    apply_op(nb, ("router",), 3)
    assert compile_incremental(prev, nb).dirty is None
