"""Entry encoding, tuples from packets (Scapy as the oracle), quoted headers of ICMP errors."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, TCPerror, UDPerror
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    IPerror6,
    IPv6,
)
from scapy.layers.l2 import Ether

from netvirt.dataplane.nf import CtEntry, CtState, CtTuple, packet_tuple, related_tuple
from netvirt.dataplane.nf.codec import (
    ECHO_PORT,
    MIRROR,
    PRIMARY,
    CodecError,
    ct_key,
    decode,
    encode,
    icmp_tuple,
    is_icmp_error,
    stable_hash,
)
from netvirt.dataplane.packet import parse_packet

ETH = Ether(src="fa:16:3e:00:00:01", dst="fa:16:3e:00:00:02")


@st.composite
def tuples(draw: st.DrawFn, ip_version: int | None = None) -> CtTuple:
    v = ip_version or draw(st.sampled_from([4, 6]))
    bits = 32 if v == 4 else 128
    addr = st.integers(0, (1 << bits) - 1)
    port = st.integers(0, ECHO_PORT)
    proto = draw(st.sampled_from([1, 6, 17, 47, 58, 132]))
    return CtTuple(v, proto, draw(addr), draw(addr), draw(port), draw(port))


@st.composite
def entries(draw: st.DrawFn) -> CtEntry:
    orig = draw(tuples())
    reply = draw(tuples(orig.ip_version))._replace(proto=orig.proto)
    times = st.floats(0, 1e10, allow_nan=False)
    text = st.text(max_size=40)
    return CtEntry(
        zone=draw(st.integers(0, (1 << 64) - 1)),
        orig=orig,
        reply=reply,
        state=draw(st.sampled_from(list(CtState))),
        created=draw(times),
        last_seen=draw(times),
        expiry=draw(times),
        mark=draw(st.integers(0, (1 << 32) - 1)),
        flags=draw(st.integers(0, 7)),
        lb_counter=draw(text),
        lb_backend=draw(text),
    )


@given(entry=entries(), kind=st.sampled_from([PRIMARY, MIRROR]), version=st.integers(0, 1 << 40))
def test_nf_codec_round_trip(entry: CtEntry, kind: int, version: int) -> None:
    decoded, decoded_kind = decode(encode(entry, kind), version)
    assert decoded_kind == kind
    assert decoded == replace(entry, version=version)


@given(entry=entries(), cut=st.integers(0, 200))
def test_nf_codec_truncated_records_raise_codec_error(entry: CtEntry, cut: int) -> None:
    raw = encode(entry)
    if cut >= len(raw):
        return
    with pytest.raises(CodecError):
        decode(raw[:cut])


@given(raw=st.binary(max_size=120))
def test_nf_codec_never_raises_anything_else(raw: bytes) -> None:
    try:
        entry, kind = decode(raw)
    except CodecError:
        return
    assert kind in (PRIMARY, MIRROR)
    assert entry.orig.ip_version in (4, 6)


def test_nf_codec_ipv4_records_are_compact() -> None:
    t = CtTuple(4, 6, 1, 2, 3, 4)
    entry = CtEntry(1, t, t.reversed(), CtState.ESTABLISHED, 1.0, 1.0, 2.0)
    assert len(encode(entry)) <= 90


def test_nf_keys_differ_per_zone_and_direction() -> None:
    t = CtTuple(4, 6, 1, 2, 3, 4)
    keys = {ct_key("p:", 1, t), ct_key("p:", 2, t), ct_key("p:", 1, t.reversed())}
    assert len(keys) == 3


def test_nf_stable_hash_is_fixed() -> None:
    """Hosts must agree: the value is pinned, not just self-consistent."""
    assert stable_hash(0) == 0xE220A8397B1DCDAF
    assert stable_hash(1, 2, 3) == 0xED671830066AE2EC
    assert stable_hash(1, 2, 3) != stable_hash(3, 2, 1)


def test_nf_packet_tuple_tcp_udp() -> None:
    tcp = parse_packet(bytes(ETH / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1234, dport=80)))
    assert packet_tuple(tcp) == CtTuple(4, 6, 0x0A000001, 0x0A000002, 1234, 80)
    udp6 = parse_packet(
        bytes(ETH / IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP(sport=5, dport=53))
    )
    assert packet_tuple(udp6) == CtTuple(6, 17, 0x20010DB8 << 96 | 1, 0x20010DB8 << 96 | 2, 5, 53)


def test_nf_packet_tuple_icmp_echo_pairs() -> None:
    request = parse_packet(
        bytes(ETH / IP(src="10.0.0.1", dst="10.0.0.2") / ICMP(type=8, id=0x4242))
    )
    reply = parse_packet(bytes(ETH / IP(src="10.0.0.2", dst="10.0.0.1") / ICMP(type=0, id=0x4242)))
    req_t, rep_t = packet_tuple(request), packet_tuple(reply)
    assert req_t is not None
    assert req_t == icmp_tuple(4, 0x0A000001, 0x0A000002, 8, 0x4242)
    assert rep_t == req_t.reversed()
    v6 = IPv6(src="2001:db8::1", dst="2001:db8::2")
    req6 = packet_tuple(parse_packet(bytes(ETH / v6 / ICMPv6EchoRequest(id=7))))
    v6r = IPv6(src="2001:db8::2", dst="2001:db8::1")
    rep6 = packet_tuple(parse_packet(bytes(ETH / v6r / ICMPv6EchoReply(id=7))))
    assert req6 is not None
    assert rep6 == req6.reversed()
    assert req6.sport == 7


def test_nf_related_tuple_from_icmp_errors() -> None:
    quoted = IPerror(src="10.0.0.1", dst="8.8.8.8") / UDPerror(sport=5000, dport=53)
    error = ETH / IP(src="192.0.2.1", dst="10.0.0.1") / ICMP(type=3, code=3) / quoted
    assert related_tuple(parse_packet(bytes(error))) == CtTuple(
        4, 17, 0x0A000001, 0x08080808, 5000, 53
    )
    tcp_quote = IPerror(src="10.0.0.1", dst="10.0.0.9") / TCPerror(sport=1, dport=22)
    ttl = ETH / IP(src="192.0.2.1", dst="10.0.0.1") / ICMP(type=11) / tcp_quote
    assert related_tuple(parse_packet(bytes(ttl))) == CtTuple(4, 6, 0x0A000001, 0x0A000009, 1, 22)
    v6_quote = IPerror6(src="2001:db8::1", dst="2001:db8::9") / UDPerror(sport=7, dport=9)
    v6 = ETH / IPv6(src="2001:db8::fe", dst="2001:db8::1") / ICMPv6DestUnreach(code=4) / v6_quote
    expected = CtTuple(6, 17, 0x20010DB8 << 96 | 1, 0x20010DB8 << 96 | 9, 7, 9)
    assert related_tuple(parse_packet(bytes(v6))) == expected
    echo = ETH / IP(src="10.0.0.1", dst="10.0.0.2") / ICMP(type=8)
    assert related_tuple(parse_packet(bytes(echo))) is None


def test_nf_is_icmp_error() -> None:
    assert is_icmp_error(4, 3)
    assert is_icmp_error(6, 2)
    assert not is_icmp_error(4, 8)
    assert not is_icmp_error(6, 135)
