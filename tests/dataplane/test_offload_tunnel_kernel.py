"""The kernel's Geneve encapsulation and decapsulation against the user-space tunnel
(root: BPF_PROG_TEST_RUN).

``forward`` with an encap entry must leave exactly the datagram the user-space
tunnel code decodes back into ``Rewrite.apply(frame)`` (outer IPv4 and UDP valid,
the Geneve header of ``geneve.kernel_header``); ``decap`` must turn the datagram a
user-space sender builds (or the kernel's own) into ``Rewrite.apply(inner)``, and
leave every datagram of another shape to the stack untouched.
"""

from __future__ import annotations

import ctypes
import os
import socket
import struct
import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from netvirt.dataplane.fastpath import derive, frame_key
from netvirt.dataplane.headers.checksum import internet_checksum
from netvirt.dataplane.headers.geneve import netvirt_header
from netvirt.dataplane.offload import bpf
from netvirt.dataplane.offload.manager import pack_key, pack_value
from netvirt.dataplane.offload.tunnel import OUTER_BYTES, template
from netvirt.dataplane.ports.base import VnetHdr
from netvirt.dataplane.tunnels.geneve import GeneveTunnel, kernel_header, offload_option

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="loading BPF programs needs root")

TC_ACT_OK, TC_ACT_REDIRECT = 0, 7
LO = 1
# entries under test live a minute: a loaded machine may pause a test between writing an
# entry and running the program for longer than a second (an expired entry is not served)
LIVE_NS = 60 * 10**9
LOCAL, REMOTE, PORT = "192.0.2.1", "192.0.2.2", 6081
SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def loaded() -> Iterator[bpf.Loaded]:
    found = bpf.load()
    conf = socket.inet_aton(LOCAL) + struct.pack("=I", PORT)
    _write(found, found.tunnel_fd, struct.pack("=I", 0), conf)
    yield found
    found.close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[GeneveTunnel]:
    with GeneveTunnel("127.0.0.1", 0) as endpoint:  # its decoder: what a datapath receives
        yield endpoint


def _write(loaded: bpf.Loaded, fd: int, key: bytes, value: bytes) -> None:
    kb = ctypes.create_string_buffer(key, len(key))
    vb = ctypes.create_string_buffer(value, len(value))
    assert loaded.lib.bpf_map_update_elem(fd, kb, vb, 0) == 0


def _remove(loaded: bpf.Loaded, key: bytes) -> None:
    kb = ctypes.create_string_buffer(key, len(key))
    loaded.lib.bpf_map_delete_elem(loaded.flows_fd, kb)


def _frames() -> st.SearchStrategy[bytes]:
    mac = st.binary(min_size=6, max_size=6).map(lambda m: bytes([m[0] & 0xFE]) + m[1:])
    ip4 = st.integers(1, 2**32 - 2).map(lambda n: socket.inet_ntoa(n.to_bytes(4, "big")))
    port = st.integers(1, 65535)
    payload = st.binary(max_size=60)

    def ether(src: bytes, dst: bytes) -> Ether:
        return Ether(src=src.hex(":"), dst=dst.hex(":"))

    tcp4 = st.builds(
        lambda s, d, a, b, sp, dp, p: bytes(
            ether(s, d) / IP(src=a, dst=b) / TCP(sport=sp, dport=dp, flags="A") / p
        ),
        mac, mac, ip4, ip4, port, port, payload,
    )  # fmt: skip
    udp4 = st.builds(
        lambda s, d, a, b, sp, dp, p: bytes(
            ether(s, d) / IP(src=a, dst=b) / UDP(sport=sp, dport=dp) / p
        ),
        mac, mac, ip4, ip4, port, port, payload,
    )  # fmt: skip
    icmp4 = st.builds(
        lambda s, d, a, b, i, p: bytes(ether(s, d) / IP(src=a, dst=b) / ICMP(id=i) / p),
        mac, mac, ip4, ip4, port, payload,
    )  # fmt: skip
    udp6 = st.builds(
        lambda s, d, sp, dp, p: bytes(
            ether(s, d) / IPv6(src="fd00::1", dst="fd00::2") / UDP(sport=sp, dport=dp) / p
        ),
        mac, mac, port, port, payload,
    )  # fmt: skip
    return st.one_of(tcp4, udp4, icmp4, udp6)


def _switched(frame: bytes) -> bytes:
    """A rewrite a distributed router would make before the tunnel: new MACs."""
    return b"\x02\xaa\xbb\xcc\xdd\xee" + b"\x02\x11\x22\x33\x44\x55" + frame[12:]


def _outer(payload: bytes, dst: str = LOCAL, port: int = PORT) -> bytes:
    """An Ethernet + IPv4 + UDP datagram carrying ``payload`` to ``dst:port``."""
    packet = Ether(src="02:00:00:00:00:09", dst="02:00:00:00:00:0a")
    packet /= IP(src=REMOTE, dst=dst, flags="DF") / UDP(sport=PORT, dport=port, chksum=0)
    return bytes(packet / payload)


@SETTINGS
@given(_frames(), st.integers(1, 2**24 - 1), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF))
def test_the_kernel_encapsulates_what_the_user_space_receiver_decodes(
    loaded: bpf.Loaded, receiver: GeneveTunnel, frame: bytes, vni: int, ingress: int, egress: int
) -> None:
    covered, layout = frame_key(frame)  # type: ignore[misc]
    output = _switched(frame)
    rewrite = derive(frame, output, layout, seeded=False)
    assert rewrite is not None
    outer = template(LOCAL, REMOTE, PORT, vni, ingress, egress)
    value = pack_value(LO, rewrite, time.monotonic_ns() + LIVE_NS, layout, (1500, outer))
    assert value is not None
    key = pack_key(LO, layout.name, covered)
    _write(loaded, loaded.flows_fd, key, value)
    try:
        verdict, sent = bpf.run_once(loaded.forward_fd, loaded.lib, frame, LO)
    finally:
        _remove(loaded, key)
    assert verdict == TC_ACT_REDIRECT
    assert sent[12:14] == b"\x08\x00"
    ip, udp, geneve = sent[14:34], sent[34:42], sent[42:OUTER_BYTES]
    assert internet_checksum(ip) == 0  # the outer IPv4 header checksum, lengths filled in
    assert ip[12:20] == socket.inet_aton(LOCAL) + socket.inet_aton(REMOTE)
    assert int.from_bytes(ip[2:4], "big") == len(sent) - 14
    assert struct.unpack("!HHHH", udp) == (PORT, PORT, len(sent) - 34, 0)
    assert geneve == kernel_header(vni, ingress, egress)
    assert sent[OUTER_BYTES:] == output  # the inner frame: the slow path's bytes
    decoded = receiver._decode(sent[42:], REMOTE)
    assert decoded is not None
    assert (decoded.vni, decoded.ingress, decoded.egress) == (vni, ingress, egress)
    assert decoded.frame.data == output


def test_frames_that_do_not_fit_the_underlay_go_to_the_datapath(loaded: bpf.Loaded) -> None:
    frame = bytes(
        Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2) / (b"x" * 200)
    )
    covered, layout = frame_key(frame)  # type: ignore[misc]
    rewrite = derive(frame, frame, layout, seeded=False)
    outer = template(LOCAL, REMOTE, PORT, 5, 1, 2)
    value = pack_value(LO, rewrite, time.monotonic_ns() + LIVE_NS, layout, (len(frame) - 1, outer))
    key = pack_key(LO, layout.name, covered)
    _write(loaded, loaded.flows_fd, key, value or b"")
    try:
        # (``punt`` applies the same test; a test run cannot show it the Ethernet header)
        verdict, left = bpf.run_once(loaded.forward_fd, loaded.lib, frame, LO)
        assert (verdict, left) == (TC_ACT_OK, frame)
    finally:
        _remove(loaded, key)


def test_a_flow_that_sends_super_frames_stays_with_the_datapath(loaded: bpf.Loaded) -> None:
    """GSO super-frames into the tunnel are the datapath's (its offload option), and so
    is the rest of that flow for a while: its small frames must not overtake them."""
    outer = template(LOCAL, REMOTE, PORT, 5, 1, 2)
    keys, frames = [], []
    for sport, flags in ((1, "A"), (2, "A"), (1, "PA")):
        frame = bytes(
            Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=sport, dport=2, flags=flags)
        )
        covered, layout = frame_key(frame)  # type: ignore[misc]
        rewrite = derive(frame, frame, layout, seeded=False)
        value = pack_value(LO, rewrite, time.monotonic_ns() + LIVE_NS, layout, (1500, outer))
        keys.append(pack_key(LO, layout.name, covered))
        frames.append(frame)
        _write(loaded, loaded.flows_fd, keys[-1], value or b"")
    try:
        bulk, other, pushed = frames
        assert bpf.run_once(loaded.forward_fd, loaded.lib, bulk, LO, gso_size=1448) == (
            TC_ACT_OK, bulk,
        )  # fmt: skip
        assert bpf.run_once(loaded.forward_fd, loaded.lib, bulk, LO) == (TC_ACT_OK, bulk)
        # the same connection's segments with other flags (another exact flow): its too
        assert bpf.run_once(loaded.forward_fd, loaded.lib, pushed, LO) == (TC_ACT_OK, pushed)
        assert bpf.run_once(loaded.forward_fd, loaded.lib, other, LO)[0] == TC_ACT_REDIRECT
    finally:
        for key in keys:
            _remove(loaded, key)


@SETTINGS
@given(_frames(), st.integers(1, 2**24 - 1), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF))
def test_the_kernel_decapsulates_what_a_user_space_sender_sends(
    loaded: bpf.Loaded, frame: bytes, vni: int, ingress: int, egress: int
) -> None:
    covered, layout = frame_key(frame)  # type: ignore[misc]
    output = _switched(frame)
    rewrite = derive(frame, output, layout, seeded=False)
    assert rewrite is not None
    value = pack_value(LO, rewrite, time.monotonic_ns() + LIVE_NS, layout)
    assert value is not None
    key = pack_key(LO, layout.name, covered, vni, ingress << 16 | egress)
    user_space = _outer(netvirt_header(vni, ingress, egress).pack() + frame)
    kernels = _outer(kernel_header(vni, ingress, egress) + frame)
    _write(loaded, loaded.flows_fd, key, value)
    try:
        for datagram in (user_space, kernels):
            verdict, delivered = bpf.run_once(loaded.decap_fd, loaded.lib, datagram, LO)
            assert verdict == TC_ACT_REDIRECT
            assert delivered == output
        # the same inner frame under other tunnel keys: not this entry
        for other in ((vni ^ 1, ingress, egress), (vni, ingress ^ 1, egress)):
            datagram = _outer(netvirt_header(*other).pack() + frame)
            assert bpf.run_once(loaded.decap_fd, loaded.lib, datagram, LO) == (TC_ACT_OK, datagram)
    finally:
        _remove(loaded, key)


def _malformed(good: bytes, frame: bytes) -> list[bytes]:
    """Datagrams ``decap`` must leave to the stack (and so to the datapath's socket)."""
    header = netvirt_header(7, 1, 2)
    oam = netvirt_header(7, 1, 2)
    oam.oam = True
    offload = netvirt_header(8, 1, 2)  # (another flow: this one would then be bulk)
    offload.options += (offload_option(VnetHdr(1, 0, 0, 0, 34, 6)),)
    bad_ip_sum = bytearray(good)
    bad_ip_sum[25] ^= 0x10
    short_udp = bytearray(good)
    short_udp[39] -= 1  # a UDP length that disagrees with the IP total length
    bad_inner = bytearray(good)
    bad_inner[50 + 8 + 25] ^= 0xFF  # the inner IPv4 header checksum
    unknown = bytearray(good)
    unknown[52] = 0x90  # another critical option type
    return [
        _outer(header.pack() + frame, dst="192.0.2.99"),  # not this host's address
        _outer(header.pack() + frame, port=4789),  # not the Geneve port
        _outer(oam.pack() + frame),
        _outer(offload.pack() + frame),  # offload metadata: only the datapath reads it
        bytes(bad_ip_sum),
        bytes(short_udp),
        bytes(bad_inner),
        bytes(unknown),
        good[:-1],
    ]


def test_datagrams_of_another_shape_reach_the_datapath_untouched(loaded: bpf.Loaded) -> None:
    frame = bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2) / b"x")
    covered, layout = frame_key(frame)  # type: ignore[misc]
    live = time.monotonic_ns() + LIVE_NS
    value = pack_value(LO, derive(frame, frame, layout, False), live, layout)
    key = pack_key(LO, layout.name, covered, 7, 1 << 16 | 2)
    good = _outer(netvirt_header(7, 1, 2).pack() + frame)
    _write(loaded, loaded.flows_fd, key, value or b"")
    try:
        assert bpf.run_once(loaded.decap_fd, loaded.lib, good, LO)[0] == TC_ACT_REDIRECT
        for datagram in _malformed(good, frame):
            assert bpf.run_once(loaded.decap_fd, loaded.lib, datagram, LO) == (TC_ACT_OK, datagram)
        expired = pack_value(
            LO, derive(frame, frame, layout, False), time.monotonic_ns() - 1, layout
        )
        _write(loaded, loaded.flows_fd, key, expired or b"")
        revalidated = bpf.run_once(loaded.decap_fd, loaded.lib, good, LO)[0]
        assert revalidated == TC_ACT_OK  # this one to the datapath's socket
        served = bpf.run_once(loaded.decap_fd, loaded.lib, good, LO)[0]
        assert served == TC_ACT_REDIRECT  # meanwhile, the next ones stay in the kernel
        long_ago = time.monotonic_ns() - 3 * 10**9  # no datapath renewed it: a dead one
        dead = pack_value(LO, derive(frame, frame, layout, False), long_ago, layout)
        _write(loaded, loaded.flows_fd, key, dead or b"")
        for _ in range(2):
            assert bpf.run_once(loaded.decap_fd, loaded.lib, good, LO)[0] == TC_ACT_OK
    finally:
        _remove(loaded, key)


def test_a_flow_whose_super_frames_come_with_metadata_stays_with_the_datapath(
    loaded: bpf.Loaded,
) -> None:
    """A datagram with netvirt's offload option is the datapath's (it alone reads the
    option), and so, for a while, are the plain datagrams of the same flow."""
    keys, plain = [], []
    for sport in (5, 6):
        frame = bytes(
            Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=sport, dport=2, flags="A")
        )
        covered, layout = frame_key(frame)  # type: ignore[misc]
        rewrite = derive(frame, frame, layout, seeded=False)
        value = pack_value(LO, rewrite, time.monotonic_ns() + LIVE_NS, layout)
        keys.append(pack_key(LO, layout.name, covered, 9, 1 << 16 | 2))
        plain.append(_outer(netvirt_header(9, 1, 2).pack() + frame))
        _write(loaded, loaded.flows_fd, keys[-1], value or b"")
    frame = plain[0][58:]
    seeded, gso = netvirt_header(9, 1, 2), netvirt_header(9, 1, 2)
    seeded.options += (offload_option(VnetHdr(1, 0, 0, 0, 34, 16)),)  # a seed, no GSO
    gso.options += (offload_option(VnetHdr(1, 1, 54, 1448, 34, 16)),)  # TCPv4 GSO
    seed_only = _outer(seeded.pack() + plain[1][58:])  # the other flow: not made bulk
    super_frame = _outer(gso.pack() + frame)
    try:
        for datagram in (seed_only, super_frame):  # both the datapath's
            assert bpf.run_once(loaded.decap_fd, loaded.lib, datagram, LO) == (TC_ACT_OK, datagram)
        assert bpf.run_once(loaded.decap_fd, loaded.lib, plain[0], LO) == (TC_ACT_OK, plain[0])
        assert bpf.run_once(loaded.decap_fd, loaded.lib, plain[1], LO)[0] == TC_ACT_REDIRECT
    finally:
        for key in keys:
            _remove(loaded, key)


def test_a_seed_marked_by_the_kernel_is_finished_by_the_receiver(receiver: GeneveTunnel) -> None:
    """A CHECKSUM_PARTIAL frame the kernel encapsulated keeps its seed across a veth: the
    receiver takes it as needing its checksum; a finished checksum stays as it is."""
    done = bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1, dport=2) / b"abc")
    packet = Ether(done)
    seed = struct.pack("!H", _fold(_pseudo(packet[IP].src, packet[IP].dst, 6, len(done) - 34)))
    partial = done[:50] + seed + done[52:]
    got = receiver._decode(kernel_header(3, 1, 2) + partial, REMOTE)
    assert got is not None
    assert got.frame.vnet is not None
    assert (got.frame.vnet.needs_csum, got.frame.vnet.csum_start, got.frame.vnet.csum_offset) == (
        True, 34, 16,
    )  # fmt: skip
    finished = receiver._decode(kernel_header(3, 1, 2) + done, REMOTE)
    assert finished is not None
    assert finished.frame.vnet is None
    plain = receiver._decode(netvirt_header(3, 1, 2).pack() + partial, REMOTE)
    assert plain is not None
    assert plain.frame.vnet is None


def _pseudo(src: str, dst: str, proto: int, length: int) -> int:
    words = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, proto, length)
    return sum(int.from_bytes(words[i : i + 2], "big") for i in range(0, len(words), 2))


def _fold(value: int) -> int:
    while value >> 16:
        value = (value & 0xFFFF) + (value >> 16)
    return value
