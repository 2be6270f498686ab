"""DHCP (RFC 2131/2132/3442/3396) codec, byte-exact against Scapy's BOOTP/DHCP."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import assume, given
from scapy.layers.dhcp import BOOTP, DHCP

from dataplane.dp_strategies import FAST, SCAPY, dhcp_messages, dhcp_options
from netvirt.dataplane.drops import DropReason, ParseError
from netvirt.dataplane.headers import dhcp
from netvirt.dataplane.headers.addr import ip4, ip4_str
from netvirt.dataplane.headers.dhcp import ClasslessRoute, DhcpMessage, DhcpOptions


def scapy_options(options: DhcpOptions) -> list[Any]:
    """The Scapy option list in the order our encoder writes."""
    out: list[Any] = []
    if options.message_type is not None:
        out.append(("message-type", options.message_type))
    if options.subnet_mask is not None:
        out.append(("subnet_mask", ip4_str(options.subnet_mask)))
    if options.routers:
        out.append(("router", *map(ip4_str, options.routers)))
    if options.dns_servers:
        out.append(("name_server", *map(ip4_str, options.dns_servers)))
    if options.hostname is not None:
        out.append(("hostname", options.hostname.encode("latin-1")))
    if options.domain_name is not None:
        out.append(("domain", options.domain_name.encode("latin-1")))
    if options.mtu is not None:
        out.append(("interface-mtu", options.mtu))
    if options.requested_ip is not None:
        out.append(("requested_addr", ip4_str(options.requested_ip)))
    if options.lease_time is not None:
        out.append(("lease_time", options.lease_time))
    if options.server_id is not None:
        out.append(("server_id", ip4_str(options.server_id)))
    if options.parameter_request_list:
        out.append(("param_req_list", list(options.parameter_request_list)))
    if options.classless_routes:
        routes = [f"{ip4_str(p)}/{n}:{ip4_str(r)}" for p, n, r in options.classless_routes]
        out.append(("classless_static_routes", routes))
    out.extend(options.other)
    out.append("end")
    return out


def fits_one_option(options: DhcpOptions) -> bool:
    """Scapy does not split long values (RFC 3396); keep its inputs below 256 bytes."""
    texts = [options.hostname or "", options.domain_name or ""]
    sizes = [len(t) for t in texts] + [len(data) for _, data in options.other]
    sizes += [4 * len(options.routers), 4 * len(options.dns_servers)]
    sizes += [len(options.parameter_request_list), 9 * len(options.classless_routes)]
    return max(sizes) < 256


@FAST
@given(dhcp_messages)
def test_message_round_trip(message: DhcpMessage) -> None:
    assert DhcpMessage.parse(message.pack()) == (message, len(message.pack()))


@SCAPY
@given(dhcp_options)
def test_options_match_scapy(options: DhcpOptions) -> None:
    assume(fits_one_option(options))
    wire = bytes(DHCP(options=scapy_options(options)))
    assert options.pack() == wire
    assert DhcpOptions.parse(wire, 0) == options


def test_offer_matches_scapy() -> None:
    chaddr = bytes.fromhex("fa163e000001")
    options = DhcpOptions(
        message_type=dhcp.DHCPOFFER,
        subnet_mask=ip4("255.255.255.0"),
        routers=(ip4("10.0.0.1"),),
        dns_servers=(ip4("10.0.0.2"), ip4("8.8.8.8")),
        hostname="host-10-0-0-5",
        domain_name="openstacklocal",
        mtu=1442,
        lease_time=43200,
        server_id=ip4("10.0.0.2"),
        classless_routes=(
            ClasslessRoute(ip4("169.254.169.254"), 32, ip4("10.0.0.2")),
            ClasslessRoute(0, 0, ip4("10.0.0.1")),
        ),
    )
    message = DhcpMessage(
        dhcp.BOOTREPLY, 0xDEADBEEF, chaddr, options, yiaddr=ip4("10.0.0.5"), siaddr=ip4("10.0.0.2")
    )
    scapy = BOOTP(op=2, xid=0xDEADBEEF, chaddr=chaddr, yiaddr="10.0.0.5", siaddr="10.0.0.2") / DHCP(
        options=scapy_options(options)
    )
    assert message.pack() == bytes(scapy)
    parsed, _ = DhcpMessage.parse(bytes(scapy))
    assert parsed == message
    assert parsed.client_mac == 0xFA163E000001


def test_discover_from_scapy_with_padding_and_requests() -> None:
    scapy = BOOTP(chaddr=bytes.fromhex("020000000002"), xid=7, flags=0x8000) / DHCP(
        options=[
            ("message-type", "discover"),
            ("requested_addr", "10.0.0.9"),
            ("param_req_list", [1, 3, 6, 15, 26, 121]),
            ("hostname", b"vm"),
            "end",
            "pad",
            "pad",
        ]
    )
    message, _ = DhcpMessage.parse(bytes(scapy))
    assert message.op == dhcp.BOOTREQUEST
    assert message.flags == dhcp.FLAG_BROADCAST
    assert message.options.message_type == dhcp.DHCPDISCOVER
    assert message.options.requested_ip == ip4("10.0.0.9")
    assert message.options.parameter_request_list == (1, 3, 6, 15, 26, 121)
    assert message.options.hostname == "vm"


def test_long_values_split_and_concatenate() -> None:
    options = DhcpOptions(dns_servers=tuple(range(1, 80)), other=((224, bytes(600)),))
    wire = options.pack()
    assert wire.count(bytes((6, 255))) == 1  # 316 bytes of servers: 255 + 61
    assert DhcpOptions.parse(wire, 0) == options


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda w: w[:239], DropReason.TRUNCATED_DHCP),
        (lambda w: w[:236] + b"\x63\x82\x53\x00" + w[240:], DropReason.BAD_DHCP_COOKIE),
        (lambda w: w[:2] + b"\x11" + w[3:], DropReason.MALFORMED_DHCP),
        (lambda w: w[:240] + b"\x35\x02\x01", DropReason.TRUNCATED_DHCP),
        (lambda w: w[:240] + b"\x35\x02\x01\x02\xff", DropReason.MALFORMED_DHCP),
        (lambda w: w[:240] + b"\x1a\x02\x00\x10\xff", DropReason.MALFORMED_DHCP),
        (lambda w: w[:240] + b"\x03\x03\x0a\x00\x00\xff", DropReason.MALFORMED_DHCP),
        (lambda w: w[:240] + b"\x79\x05\x21\x00\x00\x00\x00\xff", DropReason.MALFORMED_DHCP),
        (lambda w: w[:240] + b"\x79\x03\x18\x0a\x00\xff", DropReason.MALFORMED_DHCP),
    ],
)
def test_errors(mutate: Any, reason: DropReason) -> None:
    wire = DhcpMessage(1, 1, bytes(6), DhcpOptions(message_type=1)).pack()
    with pytest.raises(ParseError) as info:
        DhcpMessage.parse(mutate(wire))
    assert info.value.reason is reason


def test_missing_end_option_is_tolerated() -> None:
    wire = DhcpMessage(1, 1, bytes(6), DhcpOptions(message_type=3)).pack()[:-1]
    assert DhcpMessage.parse(wire)[0].options.message_type == 3


def test_raw_options_cannot_shadow_typed_ones() -> None:
    with pytest.raises(ValueError, match="raw bytes"):
        DhcpOptions(other=((53, b"\x01"),)).pack()
