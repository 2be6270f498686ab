"""Normalized goldens of the switch builders, one per feature (NETVIRT_UPDATE_GOLDENS=1)."""

from __future__ import annotations

from typing import Any

from compiler.conftest import NBBuilder
from compiler.golden import check_golden, dump
from netvirt.compiler.compile import compile_nb
from netvirt.compiler.nb import NBSnapshot

VNI = 101
PORT_SEC_STAGES = (
    "ls_in_port_sec_l2",
    "ls_in_port_sec_ip",
    "ls_in_port_sec_nd",
    "ls_out_port_sec_ip",
    "ls_out_port_sec_l2",
)
ACL_STAGES = tuple(
    f"ls_{way}_{name}"
    for way in ("in", "out")
    for name in ("pre_acl", "pre_stateful", "acl", "stateful")
)


def _net(nbb: NBBuilder) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    net = nbb.network("net1", VNI)
    v4 = nbb.subnet(net, "sub4", "10.0.0.0/24")
    v6 = nbb.subnet(net, "sub6", "2001:db8::/64")
    return net, v4, v6


def _golden(name: str, nb: NBSnapshot, stages: tuple[str, ...]) -> str:
    text = dump(compile_nb(nb), nb, VNI, stages=stages)
    check_golden(name, text)
    return text


def test_port_security_golden(nbb: NBBuilder) -> None:
    net, v4, v6 = _net(nbb)
    nbb.port(
        net,
        "vm1",
        [(v4, "10.0.0.5"), (v6, "2001:db8::5")],
        pairs=[
            {"ip_address": "10.0.0.128/25"},
            {"ip_address": "10.0.0.9", "mac_address": "02:00:00:00:00:09"},
        ],
    )
    nbb.port(net, "open", [(v4, "10.0.0.6")], port_security_enabled=False)
    nbb.port(net, "down", [(v4, "10.0.0.7")], admin_state_up=False)
    nbb.port(net, "mac-only", [])
    router = nbb.router("r1")
    nbb.router_interface(router, net, v4)
    text = _golden("switch_port_security", nbb.snapshot(), PORT_SEC_STAGES)
    assert 'inport == "open" => next;' in text
    assert 'inport == "down" => drop(port_down);' in text


def test_acl_golden(nbb: NBBuilder) -> None:
    net, v4, v6 = _net(nbb)
    default = nbb.default_group()
    web = nbb.security_group("web")
    nbb.rule(web, "ingress", protocol="tcp", port_range_min=80, port_range_max=80)
    nbb.rule(web, "ingress", protocol="tcp", port_range_min=8000, port_range_max=8080)
    nbb.rule(web, "ingress", protocol="udp", port_range_min=1, port_range_max=65535)
    nbb.rule(web, "ingress", protocol="icmp", port_range_min=8, port_range_max=0)
    nbb.rule(web, "ingress", "IPv6", protocol="icmp", remote_ip_prefix="2001:db8:1::/48")
    nbb.rule(web, "ingress", protocol="47", remote_ip_prefix="192.168.0.0/16")
    nbb.rule(web, "ingress", protocol="sctp", port_range_min=5000, port_range_max=5001)
    nbb.rule(web, "egress", protocol="udp", port_range_min=53, port_range_max=53)
    nbb.rule(web, "ingress", protocol="tcp", remote_group_id=default["id"])
    loose = nbb.security_group("stateless", stateful=False)
    nbb.rule(loose, "ingress", protocol="udp", port_range_min=4789, port_range_max=4789)
    nbb.rule(loose, "egress")
    nbb.port(net, "vm1", [(v4, "10.0.0.5"), (v6, "2001:db8::5")], sgs=[default, web])
    nbb.port(net, "vm2", [(v4, "10.0.0.6")], sgs=[default])
    nbb.port(net, "vm3", [(v4, "10.0.0.7")], sgs=[loose])
    nbb.port(net, "bare", [(v4, "10.0.0.8")])
    text = _golden("switch_acl", nbb.snapshot(), ACL_STAGES)
    assert '"bare"' not in text
    assert 'outport == "vm3" && ip4 && udp && udp.dst == 4789 => next;' in text


def test_lb_golden(nbb: NBBuilder) -> None:
    net, v4, _ = _net(nbb)
    other = nbb.network("backend-net", 202)
    other_v4 = nbb.subnet(other, "backend-sub", "10.1.0.0/24")
    router = nbb.router("r1")
    nbb.router_interface(router, net, v4)
    nbb.router_interface(router, other, other_v4)
    for index in range(1, 5):
        nbb.port(net, f"web{index}", [(v4, f"10.0.0.1{index}")])
    lb = nbb.loadbalancer("lb1", net, v4, "10.0.0.100")
    http = nbb.listener(lb, "http", "HTTP", 80)
    pool = nbb.pool(http, "web-pool", "LEAST_CONNECTIONS")
    nbb.member(pool, "10.0.0.11", 8080)
    nbb.member(pool, "10.0.0.12", 8080, operating_status="OFFLINE")
    nbb.member(pool, "10.0.0.13", 8080, backup=True)
    nbb.member(pool, "10.1.0.20", 8080)
    nbb.member(pool, "10.0.0.14", 8080, weight=0)
    dns = nbb.listener(lb, "dns", "UDP", 53)
    dns_pool = nbb.pool(
        dns,
        "dns-pool",
        "SOURCE_IP",
        session_persistence={"type": "SOURCE_IP", "persistence_timeout": 60},
    )
    nbb.member(dns_pool, "10.0.0.11", 53)
    nbb.listener(lb, "empty", "TCP", 443)
    stages = (
        "ls_in_pre_lb",
        "ls_in_pre_stateful",
        "ls_in_lb",
        "ls_in_stateful",
        "ls_in_l2_lkup",
        "ls_out_pre_stateful",
        "ls_out_stateful",
    )
    text = _golden("switch_lb", nbb.snapshot(), stages)
    assert "10.0.0.12" not in text.split("ls_in_lb 100")[1].split("\n")[0]
    assert "drop(no_lb_backend)" in text


def test_arp_nd_golden(nbb: NBBuilder) -> None:
    net, v4, v6 = _net(nbb)
    nbb.port(net, "vm1", [(v4, "10.0.0.5"), (v4, "10.0.0.15"), (v6, "2001:db8::5")])
    nbb.port(net, "vm2", [(v6, "2001:db8::6")], pairs=[{"ip_address": "10.0.0.200"}])
    router = nbb.router("r1")
    nbb.router_interface(router, net, v4)
    nbb.router_interface(router, net, v6)
    nbb.loadbalancer("lb1", net, v4, "10.0.0.100")
    text = _golden("switch_arp_nd", nbb.snapshot(), ("ls_in_arp_rsp",))
    assert "10.0.0.200" not in text  # pair addresses are answered by their owner


def test_dhcp_golden(nbb: NBBuilder) -> None:
    net = nbb.network("net1", VNI, dns_domain="example.org.", mtu=1400)
    v4 = nbb.subnet(
        net,
        "sub4",
        "10.0.0.0/24",
        dns_nameservers=["8.8.8.8", "2001:4860:4860::8888", "1.1.1.1"],
        host_routes=[{"destination": "192.168.0.0/16", "nexthop": "10.0.0.254"}],
    )
    bare = nbb.subnet(net, "nogw", "10.9.0.0/24", gateway_ip=None)
    off = nbb.subnet(net, "nodhcp", "10.8.0.0/24", enable_dhcp=False)
    slaac = nbb.subnet(net, "slaac", "2001:db8::/64", ipv6_ra_mode="slaac")
    stateful = nbb.subnet(net, "managed", "2001:db8:1::/64", ipv6_ra_mode="dhcpv6-stateful")
    nbb.port(net, "vm1", [(v4, "10.0.0.5"), (slaac, "2001:db8::5")])
    nbb.port(net, "vm2", [(bare, "10.9.0.5")])
    nbb.port(net, "vm3", [(off, "10.8.0.5")])
    nbb.port(net, "vm4", [(stateful, "2001:db8:1::5")])
    router = nbb.router("r1")
    nbb.router_interface(router, net, v4)
    nbb.router_interface(router, net, slaac)
    text = _golden("switch_dhcp", nbb.snapshot(), ("ls_in_dhcp_rsp", "ls_out_acl"))
    assert 'ls_in_dhcp_rsp 100 inport == "vm3"' not in text  # DHCP disabled on its subnet
    assert "server=10.9.0.2" in text  # no gateway: first pool address


def test_qos_golden(nbb: NBBuilder) -> None:
    gold = nbb.qos_policy("gold", dscp=46)
    silver = nbb.qos_policy("silver", dscp=18)
    nbb.qos_policy("limits-only")
    net = nbb.network("net1", VNI, qos_policy_id=silver["id"])
    v4 = nbb.subnet(net, "sub4", "10.0.0.0/24")
    nbb.port(net, "vm1", [(v4, "10.0.0.5")], qos_policy_id=gold["id"])
    nbb.port(net, "vm2", [(v4, "10.0.0.6")])
    router = nbb.router("r1")
    nbb.router_interface(router, net, v4)
    text = _golden("switch_qos", nbb.snapshot(), ("ls_in_qos_mark",))
    assert "r1-sub4" not in text  # network policies skip router ports


def test_l2_golden(nbb: NBBuilder) -> None:
    net, v4, _ = _net(nbb)
    shared = {"ip_address": "10.0.0.50", "mac_address": "02:00:00:00:00:50"}
    nbb.port(net, "vm1", [(v4, "10.0.0.5")], pairs=[shared])
    nbb.port(net, "vm2", [(v4, "10.0.0.6")], pairs=[shared])
    nbb.port(
        net,
        "vm3",
        [(v4, "10.0.0.7")],
        pairs=[{"ip_address": "10.0.0.70", "mac_address": "02:00:00:00:00:70"}],
    )
    router = nbb.router("r1")
    nbb.router_interface(router, net, v4)
    nbb.loadbalancer("lb1", net, v4, "10.0.0.100")
    text = _golden("switch_l2", nbb.snapshot(), ("ls_in_l2_lkup",))
    assert "02:00:00:00:00:50" not in text  # a MAC shared by two ports is flooded
