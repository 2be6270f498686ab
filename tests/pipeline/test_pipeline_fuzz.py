"""The pipeline takes any bytes: random, truncated and bit-flipped frames into a VM port.

Properties, on the compiled cloud of ``conftest.py`` (frames enter vm2's port):

* ``Pipeline.process`` never raises;
* a frame the codecs reject (``parse_packet`` raises ``ParseError``) is
  dropped with exactly that reason and nothing is output;
* ``drop_counts`` grows by exactly the verdict's drops, reason by reason;
* every strict prefix of a valid (unpadded) frame is malformed, and so is a
  valid IPv4 frame with one bit flipped in its IP header (the header
  checksum catches every single-bit error);
* random frames with a foreign source MAC never leave the port-secured VM port.

One pipeline (and conntrack) serves the whole module: state left by earlier
examples is part of what the pipeline must cope with.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Ether

from netvirt.dataplane.drops import DropReason, ParseError
from netvirt.dataplane.packet import parse_packet
from netvirt.dataplane.pipeline import Verdict
from pipeline.conftest import BROADCAST, VIP, Net, World

SENDER = "vm2"
FUZZ = settings(max_examples=150, deadline=None)


def valid_frames(w: World) -> list[bytes]:
    """Frames vm2 may send, none padded, so every byte belongs to a header or payload."""
    me, ip = w.mac(SENDER), w.ip(SENDER)
    chaddr = bytes.fromhex(me.replace(":", ""))
    frames = [
        Ether(src=me, dst=w.mac("vm1")) / IP(src=ip, dst=w.ip("vm1")) / TCP(dport=22, flags="S"),
        Ether(src=me, dst=w.mac("vm1")) / IP(src=ip, dst=w.ip("vm1")) / UDP(dport=53) / b"query",
        Ether(src=me, dst=w.mac("r1-web")) / IP(src=ip, dst="10.0.0.1") / ICMP() / b"ping",
        Ether(src=me, dst=w.mac("r1-web")) / IP(src=ip, dst=w.ip("vm3")) / TCP(dport=80),
        Ether(src=me, dst=w.mac("vip")) / IP(src=ip, dst=VIP) / TCP(sport=1234, dport=80),
        Ether(src=me, dst=BROADCAST) / ARP(hwsrc=me, psrc=ip, pdst=w.ip("vm1")),
        Ether(src=me, dst=BROADCAST)
        / IP(src="0.0.0.0", dst="255.255.255.255")
        / UDP(sport=68, dport=67)
        / BOOTP(chaddr=chaddr, xid=1)
        / DHCP(options=[("message-type", "discover"), "end"]),
        Ether(src=me, dst=w.mac("vm1")) / IPv6(src="fe80::1", dst="fe80::2") / UDP(dport=9),
    ]
    return [bytes(f) for f in frames]


@pytest.fixture(scope="module")
def fuzz(world: World) -> tuple[Net, list[bytes]]:
    return world.net(), valid_frames(world)


def process(net: Net, frame: bytes) -> Verdict:
    """Send ``frame`` and check the properties every input must satisfy."""
    before = dict(net.pipeline.drop_counts)
    verdict = net.send(SENDER, frame)  # must not raise
    after = net.pipeline.drop_counts
    for reason in set(verdict.drops):
        assert after[reason] - before.get(reason, 0) == verdict.drops.count(reason)
    assert sum(after.values()) - sum(before.values()) == len(verdict.drops)
    malformed = parse_error(frame)
    if malformed is not None:
        assert (verdict.outputs, verdict.drops) == ([], [malformed])
    return verdict


def parse_error(frame: bytes) -> DropReason | None:
    try:
        parse_packet(frame)
    except ParseError as err:
        return err.reason
    return None


def test_valid_frames_are_processed(fuzz: tuple[Net, list[bytes]]) -> None:
    """The baseline the mutations start from: IPv4 and ARP frames all get somewhere."""
    net, frames = fuzz
    for frame in frames:
        assert parse_error(frame) is None
        verdict = process(net, frame)
        if Ether(frame).type != 0x86DD:  # vm2 has no IPv6 address: that one is spoofed
            assert verdict.outputs, (Ether(frame).summary(), verdict.drops)


@FUZZ
@given(frame=st.binary(max_size=160))
def test_random_bytes(fuzz: tuple[Net, list[bytes]], frame: bytes) -> None:
    net, _ = fuzz
    verdict = process(net, frame)
    if frame[6:12] != bytes.fromhex(net.world.mac(SENDER).replace(":", "")):
        assert verdict.outputs == []
        assert verdict.drops


@FUZZ
@given(
    dst=st.sampled_from(["vm1", "r1-web", "vip", "broadcast"]),
    ethertype=st.sampled_from([0x0800, 0x0806, 0x86DD, 0x8100]) | st.integers(0, 0xFFFF),
    body=st.binary(max_size=120),
)
def test_random_payload_behind_a_valid_ethernet_header(
    fuzz: tuple[Net, list[bytes]], dst: str, ethertype: int, body: bytes
) -> None:
    """Deeper than random bytes: the frame passes L2 port security, the codecs see garbage."""
    net, _ = fuzz
    w = net.world
    dst_mac = BROADCAST if dst == "broadcast" else w.mac(dst)
    header = Ether(src=w.mac(SENDER), dst=dst_mac, type=ethertype)
    process(net, bytes(header) + body)


@FUZZ
@given(data=st.data())
def test_truncated_frames_are_malformed(fuzz: tuple[Net, list[bytes]], data: st.DataObject) -> None:
    net, frames = fuzz
    frame = data.draw(st.sampled_from(frames))
    truncated = frame[: data.draw(st.integers(0, len(frame) - 1))]
    reason = parse_error(truncated)
    assert reason is not None
    verdict = process(net, truncated)
    assert (verdict.outputs, verdict.drops) == ([], [reason])


@FUZZ
@given(data=st.data())
def test_bit_flipped_frames(fuzz: tuple[Net, list[bytes]], data: st.DataObject) -> None:
    net, frames = fuzz
    frame = bytearray(data.draw(st.sampled_from(frames)))
    bits = data.draw(st.lists(st.integers(0, len(frame) * 8 - 1), min_size=1, max_size=4))
    for bit in bits:
        frame[bit // 8] ^= 0x80 >> (bit % 8)
    process(net, bytes(frame))


@FUZZ
@given(data=st.data())
def test_one_bit_flip_in_an_ipv4_header_is_dropped(
    fuzz: tuple[Net, list[bytes]], data: st.DataObject
) -> None:
    net, frames = fuzz
    ipv4 = [f for f in frames if f[12:14] == b"\x08\x00"]
    frame = bytearray(data.draw(st.sampled_from(ipv4)))
    bit = data.draw(st.integers(14 * 8, 34 * 8 - 1))  # the 20-byte IPv4 header
    frame[bit // 8] ^= 0x80 >> (bit % 8)
    reason = parse_error(bytes(frame))
    assert reason is not None
    counted = net.pipeline.drop_counts.get(reason, 0)
    verdict = process(net, bytes(frame))
    assert verdict.drops == [reason]
    assert net.pipeline.drop_counts[reason] == counted + 1
