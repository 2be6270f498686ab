"""Hypothesis strategies for every header dataclass, and Scapy conversion helpers.

Strategies generate canonical values: the ones a codec can represent exactly,
so that ``parse(pack(x)) == x`` must hold.
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st

from netvirt.dataplane.headers import dhcp, geneve, icmpv6
from netvirt.dataplane.headers.arp import ArpHeader
from netvirt.dataplane.headers.ethernet import EthernetHeader, VlanTag
from netvirt.dataplane.headers.icmp import IcmpHeader
from netvirt.dataplane.headers.ipv4 import Ipv4Header
from netvirt.dataplane.headers.ipv6 import Ipv6Extension, Ipv6Fragment, Ipv6Header
from netvirt.dataplane.headers.tcp import TcpHeader
from netvirt.dataplane.headers.udp import UdpHeader
from netvirt.dataplane.headers.vxlan import VxlanHeader

# Modest example counts keep the suite fast on a shared 2-core machine.
FAST = settings(max_examples=200, deadline=None)
SCAPY = settings(max_examples=60, deadline=None)  # Scapy builds are ~100x slower than ours

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFF_FFFF)
macs = st.integers(0, 0xFFFF_FFFF_FFFF)
ip4s = st.integers(0, 0xFFFF_FFFF)
ip6s = st.integers(0, (1 << 128) - 1)


def words(max_words: int) -> st.SearchStrategy[bytes]:
    """Byte strings whose length is a multiple of 4."""
    return st.integers(0, max_words).flatmap(lambda n: st.binary(min_size=4 * n, max_size=4 * n))


def octets(max_units: int, lead: int = 0) -> st.SearchStrategy[bytes]:
    """Byte strings of ``8 * n - lead`` bytes (extension headers, ND options)."""
    return st.integers(1, max_units).flatmap(
        lambda n: st.binary(min_size=8 * n - lead, max_size=8 * n - lead)
    )


vlan_tags = st.builds(
    VlanTag,
    st.integers(0, 4095),
    st.integers(0, 7),
    st.integers(0, 1),
    st.sampled_from([0x8100, 0x88A8]),
)
# The inner ethertype must not look like a tag, or the parser would keep reading tags.
ethernets = st.builds(
    EthernetHeader,
    macs,
    macs,
    u16.filter(lambda t: t not in (0x8100, 0x88A8, 0x9100)),
    st.lists(vlan_tags, max_size=2).map(tuple),
)
arps = st.builds(ArpHeader, u16, macs, ip4s, macs, ip4s)
ipv4s = st.builds(
    Ipv4Header,
    ip4s,
    ip4s,
    u8,
    ttl=u8,
    tos=u8,
    total_length=st.integers(0, 0xFFFF),
    ident=u16,
    flags=st.integers(0, 7),
    frag_offset=st.integers(0, 0x1FFF),
    checksum=u16,
    options=words(10),
)
ipv6s = st.builds(
    Ipv6Header,
    ip6s,
    ip6s,
    u8,
    hop_limit=u8,
    traffic_class=u8,
    flow_label=st.integers(0, 0xFFFFF),
    payload_length=u16,
)
ipv6_options_ext = st.builds(Ipv6Extension, st.sampled_from([0, 43, 60]), u8, octets(4, lead=2))
ipv6_auth_ext = st.builds(
    Ipv6Extension,
    st.just(51),
    u8,
    st.integers(3, 8).flatmap(lambda n: st.binary(min_size=4 * n - 2, max_size=4 * n - 2)),
)
ipv6_fragments = st.builds(Ipv6Fragment, u8, st.integers(0, 0x1FFF), st.booleans(), u32)
icmps = st.builds(IcmpHeader, u8, u8, u16, u32)
icmpv6s = st.builds(icmpv6.Icmpv6Header, u8, u8, u16)
udps = st.builds(UdpHeader, u16, u16, u16, u16)
tcps = st.builds(TcpHeader, u16, u16, u32, u32, u8, u16, u16, u16, words(10), st.integers(0, 15))
vxlans = st.builds(VxlanHeader, st.integers(0, 0xFFFFFF), u8.map(lambda f: f | 0x08))

nd_options = st.one_of(
    st.builds(icmpv6.LinkLayerOption, st.sampled_from([1, 2]), macs),
    st.builds(icmpv6.PrefixInfoOption, u8, ip6s, u8, u32, u32),
    st.builds(icmpv6.MtuOption, u32),
    st.builds(icmpv6.RawOption, u8.filter(lambda k: k not in (1, 2, 3, 5)), octets(3, lead=2)),
)
nd_option_lists = st.lists(nd_options, max_size=4).map(tuple)
nd_messages = st.one_of(
    st.builds(icmpv6.NeighborSolicitation, ip6s, nd_option_lists),
    st.builds(
        icmpv6.NeighborAdvertisement,
        ip6s,
        st.sampled_from([0, 0x20, 0x40, 0x80, 0xE0]),
        nd_option_lists,
    ),
    st.builds(icmpv6.RouterSolicitation, nd_option_lists),
    st.builds(icmpv6.RouterAdvertisement, u8, u8, u16, u32, u32, nd_option_lists),
)

geneve_options = st.builds(
    geneve.GeneveOption,
    u16,
    u8,
    st.integers(0, 20).flatmap(lambda n: st.binary(min_size=4 * n, max_size=4 * n)),
)
geneves = st.builds(
    geneve.GeneveHeader,
    st.integers(0, 0xFFFFFF),
    u16,
    st.lists(geneve_options, max_size=3).map(tuple),
    st.booleans(),
    st.booleans(),
)


@st.composite
def classless_routes(draw: st.DrawFn) -> dhcp.ClasslessRoute:
    """A route whose prefix has no bits beyond its significant octets (RFC 3442)."""
    width = draw(st.integers(0, 32))
    octets_kept = (width + 7) // 8
    prefix = draw(ip4s) & ((0xFFFF_FFFF << (32 - 8 * octets_kept)) & 0xFFFF_FFFF)
    return dhcp.ClasslessRoute(prefix, width, draw(ip4s))


_known_codes = {1, 3, 6, 12, 15, 26, 50, 51, 53, 54, 55, 121}
latin1 = st.text(st.characters(min_codepoint=0, max_codepoint=255), max_size=300)
dhcp_options = st.builds(
    dhcp.DhcpOptions,
    message_type=st.none() | st.integers(1, 8),
    subnet_mask=st.none() | ip4s,
    routers=st.lists(ip4s, max_size=3).map(tuple),
    dns_servers=st.lists(ip4s, max_size=70).map(tuple),
    hostname=st.none() | latin1,
    domain_name=st.none() | latin1,
    mtu=st.none() | st.integers(68, 0xFFFF),
    requested_ip=st.none() | ip4s,
    lease_time=st.none() | u32,
    server_id=st.none() | ip4s,
    parameter_request_list=st.lists(u8, max_size=20).map(tuple),
    classless_routes=st.lists(classless_routes(), max_size=4).map(tuple),
    other=st.dictionaries(
        st.integers(1, 254).filter(lambda c: c not in _known_codes),
        st.binary(max_size=300),
        max_size=3,
    ).map(lambda d: tuple(d.items())),
)
dhcp_messages = st.builds(
    dhcp.DhcpMessage,
    st.sampled_from([1, 2]),
    u32,
    st.binary(max_size=16),
    dhcp_options,
    htype=u8,
    hops=u8,
    secs=u16,
    flags=u16,
    ciaddr=ip4s,
    yiaddr=ip4s,
    siaddr=ip4s,
    giaddr=ip4s,
    sname=st.binary(max_size=64).map(lambda b: b.rstrip(b"\0")),
    file=st.binary(max_size=128).map(lambda b: b.rstrip(b"\0")),
)
