"""Unit and property tests of the switch builders' helpers, checked with the reference
evaluator (compiler/expr/normalize.evaluate) and the dataplane's own DHCP decoder."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.utils6 import in6_mactoifaceid

from netvirt.compiler.build import link_local, mac_text
from netvirt.compiler.build.acl import protocol_number, rule_match
from netvirt.compiler.build.dhcp import classless_routes, dhcp_options, server_ip, server_mac
from netvirt.compiler.build.lb import usable_backends
from netvirt.compiler.expr.normalize import evaluate
from netvirt.compiler.nb import NBSnapshot
from netvirt.dataplane.fields import F, new_key
from netvirt.dataplane.headers.dhcp import ClasslessRoute, DhcpOptions

ports = st.integers(0, 65535)


def _tcp_key(dst_port: int, src: str = "10.0.0.9", dst: str = "10.0.0.5") -> list[int]:
    key = new_key()
    key[F("eth.type")] = 0x0800
    key[F("ip.proto")] = 6
    key[F("ip4.src")] = int(ipaddress.IPv4Address(src))
    key[F("ip4.dst")] = int(ipaddress.IPv4Address(dst))
    key[F("tp.dst")] = dst_port
    return key


def _rule(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp"}
    return base | kw


@given(low=ports, high=ports, port=ports)
def test_port_range_matches_exactly_the_range(low: int, high: int, port: int) -> None:
    low, high = min(low, high), max(low, high)
    match = rule_match(_rule(port_range_min=low, port_range_max=high), "src", {})
    assert match is not None
    assert evaluate(match, _tcp_key(port)) == (low <= port <= high)


@given(prefix_len=st.integers(0, 32), addr=st.integers(0, 2**32 - 1))
def test_remote_prefix_matches_the_peer(prefix_len: int, addr: int) -> None:
    net = ipaddress.IPv4Network(("10.1.2.3", prefix_len), strict=False)
    source = str(ipaddress.IPv4Address(addr))
    match = rule_match(_rule(protocol=None, remote_ip_prefix=str(net)), "src", {})
    assert match is not None
    assert evaluate(match, _tcp_key(80, src=source)) == (ipaddress.IPv4Address(addr) in net)


def test_remote_group_matches_member_addresses_only() -> None:
    members = {"g1": ["10.0.0.7", "10.0.0.8", "2001:db8::8", "10.0.9.0/24"]}
    match = rule_match(_rule(remote_group_id="g1"), "src", members)
    assert match is not None
    assert evaluate(match, _tcp_key(22, src="10.0.0.8"))
    assert evaluate(match, _tcp_key(22, src="10.0.9.77"))
    assert not evaluate(match, _tcp_key(22, src="10.0.0.9"))
    assert rule_match(_rule(remote_group_id="empty"), "src", members) is None


def test_egress_rules_match_the_destination() -> None:
    match = rule_match(_rule(direction="egress", remote_ip_prefix="10.0.0.5/32"), "dst", {})
    assert match is not None
    assert evaluate(match, _tcp_key(80, dst="10.0.0.5"))
    assert not evaluate(match, _tcp_key(80, src="10.0.0.5", dst="10.0.0.6"))


def test_rule_of_the_other_family_never_matches_ipv4() -> None:
    match = rule_match(_rule(ethertype="IPv6", protocol=None), "src", {})
    assert match is not None
    assert not evaluate(match, _tcp_key(80))


@pytest.mark.parametrize(
    ("protocol", "version", "number"),
    [
        (None, 4, None),
        ("any", 4, None),
        ("tcp", 4, 6),
        ("TCP", 6, 6),
        ("17", 4, 17),
        ("icmp", 4, 1),
        ("icmp", 6, 58),
        ("ipv6-icmp", 6, 58),
        ("vrrp", 4, 112),
    ],
)
def test_protocol_numbers(protocol: str | None, version: int, number: int | None) -> None:
    assert protocol_number(protocol, version) == number


def test_impossible_rules_are_skipped() -> None:
    assert rule_match(_rule(protocol="no-such-protocol"), "src", {}) is None
    assert rule_match(_rule(ethertype="IPv4", protocol="ipv6-icmp"), "src", {}) is None
    assert rule_match(_rule(remote_ip_prefix="2001:db8::/32"), "src", {}) is None


@given(mac=st.integers(0, 2**48 - 1))
def test_link_local_is_eui64(mac: int) -> None:
    expected = "fe80::" + in6_mactoifaceid(mac_text(mac))
    assert link_local(mac) == ipaddress.IPv6Address(expected)


# -- DHCP ---------------------------------------------------------------------------------------


def _decode(options: tuple[object, ...]) -> DhcpOptions:
    raw = b"".join(bytes([o.code, len(o.value)]) + o.value for o in options)  # type: ignore[attr-defined]
    return DhcpOptions.parse(raw + b"\xff", 0)


def test_dhcp_options_decode_as_intended() -> None:
    net = {"mtu": 1400, "dns_domain": "example.org."}
    subnet = {
        "gateway_ip": "10.0.0.1",
        "dns_nameservers": ["8.8.8.8", "2001:4860:4860::8888", "1.1.1.1"],
        "host_routes": [{"destination": "192.168.0.0/16", "nexthop": "10.0.0.254"}],
    }
    decoded = _decode(dhcp_options(net, subnet))
    assert decoded.routers == (0x0A000001,)
    assert decoded.dns_servers == (0x08080808, 0x01010101)
    assert decoded.domain_name == "example.org"
    assert decoded.mtu == 1400
    assert decoded.classless_routes == (
        ClasslessRoute(0xC0A80000, 16, 0x0A0000FE),
        ClasslessRoute(0, 0, 0x0A000001),
    )


def test_dhcp_options_without_gateway_or_routes() -> None:
    decoded = _decode(dhcp_options({"mtu": 1442}, {"gateway_ip": None, "dns_nameservers": []}))
    assert decoded.routers == ()
    assert decoded.dns_servers == ()
    assert decoded.classless_routes == ()
    assert decoded.mtu == 1442


routes = st.lists(
    st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 32), st.integers(1, 2**32 - 1)),
    min_size=1,
    max_size=8,
)


@given(routes=routes)
def test_classless_routes_round_trip(routes: list[tuple[int, int, int]]) -> None:
    """RFC 3442 encoding decoded by the dataplane gives back every route (and the default)."""
    host_routes = []
    expected = []
    for addr, length, hop in routes:
        net = ipaddress.IPv4Network((addr, length), strict=False)
        host_routes.append({"destination": str(net), "nexthop": str(ipaddress.IPv4Address(hop))})
        expected.append(ClasslessRoute(int(net.network_address), length, hop))
    subnet = {"gateway_ip": "10.0.0.1", "host_routes": host_routes}
    if all(length for _, length, _ in routes):
        expected.append(ClasslessRoute(0, 0, 0x0A000001))
    raw = classless_routes(subnet)
    decoded = DhcpOptions.parse(bytes([121, len(raw)]) + raw + b"\xff", 0)
    assert decoded.classless_routes == tuple(expected)


def test_dhcp_server_identity() -> None:
    assert server_ip({"gateway_ip": "10.0.0.1"}) == "10.0.0.1"
    pool = {"gateway_ip": None, "allocation_pools": [{"start": "10.0.0.10", "end": "10.0.0.20"}]}
    assert server_ip(pool) == "10.0.0.10"
    assert mac_text(server_mac(0x123456)) == "0a:58:00:12:34:56"
    assert server_mac(1) & (1 << 41)  # locally administered, never a port MAC (fa:16:3e)


# -- load balancer members -------------------------------------------------------------------


def test_backups_serve_only_when_no_primary_is_usable() -> None:
    nb = NBSnapshot()
    pool = {"id": "p"}

    def member(address: str, **kw: object) -> None:
        nb.members.append(
            {"pool_id": "p", "address": address, "protocol_port": 80, "weight": 1} | kw
        )

    member("10.0.0.1", operating_status="ERROR")
    member("10.0.0.2", backup=True)
    member("10.0.0.3", admin_state_up=False)
    assert [b.ip & 0xFF for b in usable_backends(nb, pool, 4)] == [2]
    member("10.0.0.4", operating_status="ONLINE")
    member("2001:db8::4")
    assert [b.ip & 0xFF for b in usable_backends(nb, pool, 4)] == [4]
    assert [b.ip_version for b in usable_backends(nb, pool, 6)] == [6]
