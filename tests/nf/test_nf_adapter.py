"""FlowKeyConntrack: the pipeline's ConnTracker on flow keys built from Scapy frames."""

from __future__ import annotations

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Packet as ScapyPacket

from netvirt.dataplane.actions import Backend, CtDnat, CtLb, CtSnat
from netvirt.dataplane.fields import CT_DNAT, CT_EST, CT_INV, CT_NEW, CT_RPL, CT_TRK, F
from netvirt.dataplane.key import extract
from netvirt.dataplane.nf import FlowKeyConntrack, tuple_of_key, write_tuple
from netvirt.dataplane.packet import parse_packet
from nf.nf_support import NfEnv

ZONE = 0x10002
ETH = Ether(src="fa:16:3e:00:00:01", dst="fa:16:3e:00:00:02")
BACKENDS = (Backend(0x0A000010, 8080), Backend(0x0A000011, 8080))


def key_of(frame: ScapyPacket) -> list[int]:
    return extract(parse_packet(bytes(ETH / frame)))


def test_nf_adapter_ct_next_and_commit(env: NfEnv) -> None:
    ct = FlowKeyConntrack(env.conntrack())
    syn = key_of(IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1000, dport=22, flags="S"))
    assert ct.ct_next(ZONE, syn, env.now) == CT_TRK | CT_NEW
    ct.ct_commit(ZONE, syn, env.now, mark=3)
    synack = key_of(IP(src="10.0.0.2", dst="10.0.0.1") / TCP(sport=22, dport=1000, flags="SA"))
    ct.begin_packet()
    assert ct.ct_next(ZONE, synack, env.now) == CT_TRK | CT_EST | CT_RPL
    assert synack[F("ct_mark")] == 3
    arp_like = [0] * len(syn)
    assert ct.ct_next(ZONE, arp_like, env.now) == 0  # not IP: untracked


def test_nf_adapter_lb_then_commit_reaches_the_same_connection(mem: NfEnv) -> None:
    """After ct_lb rewrote the key, ct_commit in the same zone must not start a second one."""
    ct = FlowKeyConntrack(mem.conntrack())
    key = key_of(IP(src="10.0.0.1", dst="10.0.0.200") / TCP(sport=1000, dport=80, flags="S"))
    assert ct.ct_lb(ZONE, key, mem.now, CtLb(BACKENDS))
    assert key[F("ct_state")] == CT_TRK | CT_NEW | CT_DNAT
    assert (key[F("ip4.dst")], key[F("tp.dst")]) == (BACKENDS[0].ip, 8080)
    ct.ct_commit(ZONE, key, mem.now, mark=7)
    translated = tuple_of_key(key)
    assert translated is not None
    assert mem.store.get(ct.conntrack.key(ZONE, translated)) is None  # no second connection
    assert len(mem.store) == 3  # primary, mirror, round-robin counter
    ct.begin_packet()
    reply = key_of(IP(src="10.0.0.16", dst="10.0.0.1") / TCP(sport=8080, dport=1000, flags="SA"))
    ct.ct_nat(ZONE, reply, mem.now, CtDnat())
    assert (reply[F("ip4.src")], reply[F("tp.src")]) == (0x0A0000C8, 80)
    assert reply[F("ct_mark")] == 7


def test_nf_adapter_lb_without_backends_is_false(env: NfEnv) -> None:
    ct = FlowKeyConntrack(env.conntrack())
    key = key_of(IP(src="10.0.0.1", dst="10.0.0.200") / TCP(sport=1000, dport=80, flags="S"))
    assert not ct.ct_lb(ZONE, key, env.now, CtLb(()))


def test_nf_adapter_snat_and_unsnat(env: NfEnv) -> None:
    ct = FlowKeyConntrack(env.conntrack())
    out = key_of(IP(src="10.0.0.5", dst="8.8.8.8") / UDP(sport=5353, dport=53))
    ct.ct_nat(ZONE, out, env.now, CtSnat(ip=0xAC180402, port_range=(1024, 65535)))
    assert out[F("ip4.src")] == 0xAC180402
    back = key_of(IP(src="8.8.8.8", dst="172.24.4.2") / UDP(sport=53, dport=out[F("tp.src")]))
    ct.begin_packet()
    ct.ct_nat(ZONE, back, env.now, CtSnat())
    assert (back[F("ip4.dst")], back[F("tp.dst")]) == (0x0A000005, 5353)
    assert back[F("ct_state")] & CT_RPL


def test_nf_adapter_invalid_nat_marks_the_key(env: NfEnv) -> None:
    ct = FlowKeyConntrack(env.conntrack())
    first = key_of(IP(src="10.0.0.5", dst="8.8.8.8") / UDP(sport=1, dport=53))
    ct.ct_nat(ZONE, first, env.now, CtSnat(ip=0xAC180402))
    clash = key_of(IP(src="10.0.0.6", dst="8.8.8.8") / UDP(sport=1, dport=53))
    ct.begin_packet()
    ct.ct_nat(ZONE, clash, env.now, CtSnat(ip=0xAC180402))
    assert clash[F("ct_state")] & CT_INV
    assert ct.last is not None
    assert ct.last.note


def test_nf_tuple_of_key_round_trip() -> None:
    key = key_of(IP(src="10.0.0.1", dst="10.0.0.2") / ICMP(type=8, id=5))
    t = tuple_of_key(key)
    assert t is not None
    assert t.proto == 1
    rewritten = t._replace(src=0x0A0000FF)
    write_tuple(key, rewritten)
    assert tuple_of_key(key) == rewritten
