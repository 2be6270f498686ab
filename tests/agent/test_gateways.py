"""The pure parts of scale-out gateways (agent/gateways.py): the hello codec, rendezvous
choice, flow hashing, liveness, and the plane's hellos, choices and expiry."""

from __future__ import annotations

import random
import struct

from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Dot1Q, Ether

from netvirt.agent.gateways import (
    HELLO_ETHERTYPE,
    GatewayPlane,
    Hello,
    Liveness,
    choose,
    decode_hello,
    encode_hello,
    flow_hash,
)
from netvirt.agent.physical import Remote
from netvirt.dataplane.drops import DropReason, ParseError

names = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=40
)
hellos = st.builds(
    Hello,
    chassis=names,
    seq=st.integers(0, 2**32 - 1),
    interval_ms=st.integers(1, 65535),
    uplinks=st.lists(names, max_size=5).map(tuple),
    leaving=st.booleans(),
)
gateways = st.lists(
    st.text("abcdefgh0123456789-", min_size=1, max_size=12), min_size=1, max_size=8, unique=True
)
flows = st.integers(0, 2**32 - 1)


# -- codec -----------------------------------------------------------------------------


@given(hellos)
def test_hello_round_trip(hello: Hello) -> None:
    frame = encode_hello(hello)
    assert struct.unpack_from("!H", frame, 12)[0] == HELLO_ETHERTYPE
    assert decode_hello(frame) == hello


def reason(data: bytes) -> DropReason | None:
    try:
        decode_hello(data)
    except ParseError as err:
        return err.reason
    return None


@given(st.binary(max_size=120))
def test_garbage_is_a_malformed_tunnel_never_a_crash(data: bytes) -> None:
    assert reason(data) in (None, DropReason.MALFORMED_TUNNEL)


@given(hellos, st.data())
def test_truncated_or_extended_hellos_are_refused(hello: Hello, data: st.DataObject) -> None:
    frame = encode_hello(hello)
    cut = data.draw(st.integers(0, len(frame) - 1))
    assert reason(frame[:cut]) is DropReason.MALFORMED_TUNNEL
    assert reason(frame + b"\x00") is DropReason.MALFORMED_TUNNEL


# -- rendezvous choice ---------------------------------------------------------------------


@given(flows, gateways, st.randoms())
def test_the_choice_is_a_candidate_and_ignores_order(
    flow: int, names: list[str], rnd: random.Random
) -> None:
    picked = choose(flow, names)
    assert picked in names
    shuffled = list(names)
    rnd.shuffle(shuffled)
    assert choose(flow, shuffled) == picked


@given(st.lists(flows, min_size=1, max_size=50), gateways, st.text("xyz", min_size=13))
def test_a_new_gateway_takes_flows_only_for_itself(
    flow_list: list[int], names: list[str], newcomer: str
) -> None:
    """Scale-out: a flow either keeps its gateway or moves to the new one."""
    for flow in flow_list:
        after = choose(flow, [*names, newcomer])
        assert after in (choose(flow, names), newcomer)


@given(st.lists(flows, min_size=1, max_size=50), gateways.filter(lambda n: len(n) > 1))
def test_removing_a_gateway_moves_only_its_flows(flow_list: list[int], names: list[str]) -> None:
    gone, rest = names[0], names[1:]
    for flow in flow_list:
        before = choose(flow, names)
        if before != gone:
            assert choose(flow, rest) == before


def test_flows_spread_evenly_and_a_newcomer_takes_about_its_share() -> None:
    sample = [flow_hash(_tcp(sport=1024 + i)) for i in range(3000)]
    three = ["gw1", "gw2", "gw3"]
    counts = {g: sum(choose(f, three) == g for f in sample) for g in three}
    assert all(800 < n < 1200 for n in counts.values()), counts
    moved = sum(choose(f, [*three, "gw4"]) != choose(f, three) for f in sample)
    assert 550 < moved < 950  # about a quarter


def test_no_candidate_no_choice() -> None:
    assert choose(1, []) is None


# -- flow hash ----------------------------------------------------------------------------


def _tcp(sport: int = 40000, **ip: object) -> bytes:
    fields = {"src": "172.24.4.20", "dst": "198.51.100.7", "ttl": 64} | ip
    return bytes(
        Ether(src="fa:16:3e:00:00:01", dst="fa:16:3e:00:00:02")
        / IP(**fields)
        / TCP(sport=sport, dport=80)
    )


def test_the_flow_hash_reads_addresses_protocol_and_ports_only() -> None:
    base = flow_hash(_tcp())
    assert flow_hash(_tcp(ttl=3)) == base  # TTL and checksum change along the path
    assert flow_hash(bytes(Ether(src="02:00:00:00:00:09") / IP(_tcp()[14:]))) == base
    tagged = Ether(src="fa:16:3e:00:00:01", dst="fa:16:3e:00:00:02") / Dot1Q(vlan=7)
    assert flow_hash(bytes(tagged / IP(_tcp()[14:]))) == base
    assert flow_hash(_tcp(sport=40001)) != base
    assert flow_hash(_tcp(dst="198.51.100.8")) != base
    udp = bytes(Ether() / IP(src="172.24.4.20", dst="198.51.100.7") / UDP(sport=40000, dport=80))
    assert flow_hash(udp) != base


def test_later_fragments_ipv6_and_other_frames_hash_what_they_have() -> None:
    def frag(**ip: object) -> bytes:
        return bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2", proto=17, **ip) / (b"x" * 8))

    # a later fragment has no ports: all fragments after the first hash alike
    assert frag(frag=100) == frag(frag=100)
    assert flow_hash(frag(frag=100)) == flow_hash(frag(frag=200))
    assert flow_hash(frag(frag=100)) != flow_hash(frag(flags="MF"))

    def v6(sport: int) -> bytes:
        return bytes(Ether() / IPv6(src="2001:db8::1", dst="2001:db8::2") / TCP(sport=sport))

    assert flow_hash(v6(5)) == flow_hash(v6(5)) != flow_hash(v6(6))
    assert flow_hash(bytes(Ether() / ARP(pdst="10.0.0.1"))) == flow_hash(
        bytes(Ether() / ARP(pdst="10.0.0.2"))
    )  # not IP: MACs and ethertype only
    assert flow_hash(bytes(Ether() / IP() / ICMP(id=1))) == flow_hash(
        bytes(Ether() / IP() / ICMP(id=2))
    )  # no ports: addresses and protocol


@given(st.binary(max_size=80))
def test_the_flow_hash_takes_any_bytes(data: bytes) -> None:
    assert 0 <= flow_hash(data) < 2**32


# -- liveness -------------------------------------------------------------------------------


def hello(name: str, seq: int = 1, *ports: str, leaving: bool = False) -> Hello:
    return Hello(name, seq, 100, ports or ("ln",), leaving)


def test_a_gateway_lives_for_three_and_a_half_intervals_after_its_last_hello() -> None:
    table = Liveness()
    assert table.heard(hello("gw1"), now=10.0)
    assert table.serving("ln", 10.34) == ["gw1"]
    assert table.serving("ln", 10.35) == []
    assert not table.heard(hello("gw1", 2), now=10.3)  # a refresh changes nothing
    assert table.serving("ln", 10.64) == ["gw1"]
    assert table.expire(10.66)
    assert table.peers == {}
    assert (table.ups, table.downs) == (1, 1)


def test_goodbye_and_empty_hellos_remove_at_once_and_lost_hellos_are_counted() -> None:
    table = Liveness()
    table.heard(hello("gw1", 1), now=0.0)
    table.heard(hello("gw2", 1), now=0.0)
    assert not table.heard(hello("gw1", 5), now=0.1)
    assert table.peers["gw1"].lost == 3
    assert table.heard(hello("gw1", 6, leaving=True), now=0.2)
    assert table.heard(Hello("gw2", 2, 100, ()), now=0.2)  # uplink gone: not a gateway now
    assert table.serving("ln", 0.2) == []
    assert not table.heard(hello("gw3", leaving=True), now=0.3)  # never heard: no change


def test_a_change_of_served_ports_is_a_change() -> None:
    table = Liveness()
    table.heard(hello("gw1", 1, "a"), now=0.0)
    assert table.heard(hello("gw1", 2, "a", "b"), now=0.1)
    assert table.serving("b", 0.1) == ["gw1"]


@given(st.lists(st.tuples(st.sampled_from(["g1", "g2", "g3"]), st.floats(0, 0.5)), max_size=30))
def test_alive_means_heard_within_the_deadline(events: list[tuple[str, float]]) -> None:
    table, now, last = Liveness(), 0.0, {}
    for name, step in events:
        now += step
        table.heard(hello(name), now)
        last[name] = now
        table.expire(now)
        assert table.serving("ln", now) == sorted(n for n, t in last.items() if now - t < 0.35)


# -- the plane ----------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


PEERS = {
    name: Remote(name, f"192.0.2.{i}", "geneve") for i, name in enumerate(("hv", "gw1", "gw2"), 1)
}
WHERE = (100, 7)


def plane(
    me: str, serving: tuple[str, ...], clock: Clock, plugged: set[str] | None = None
) -> GatewayPlane:
    p = (
        GatewayPlane(clock)
        if plugged is None
        else GatewayPlane(clock, plugged=plugged.__contains__)
    )
    p.update(me, dict.fromkeys(serving, "uplink"), PEERS, {} if serving else {WHERE: "ln"})
    return p


def test_a_gateway_says_hello_to_every_other_chassis_every_interval() -> None:
    clock = Clock()
    gw1 = plane("gw1", ("ln",), clock)
    first = gw1.due()
    assert [r.chassis for r, _ in first] == ["gw2", "hv"]
    assert decode_hello(first[0][1]) == Hello("gw1", 1, 100, ("ln",))
    assert gw1.due() == []
    clock.now += 0.09
    assert len(gw1.due()) == 2
    assert gw1.counters.hellos_sent == 4
    assert plane("hv", (), clock).due() == []  # not a gateway: silent
    bye = gw1.goodbye()
    assert decode_hello(bye[0][1]).leaving


def test_the_host_chooses_among_live_gateways_and_fails_over() -> None:
    clock = Clock()
    hv, gw1, gw2 = (
        plane("hv", (), clock),
        plane("gw1", ("ln",), clock),
        plane("gw2", ("ln",), clock),
    )
    frames = [_tcp(sport=2000 + i) for i in range(64)]
    assert hv.choose(WHERE, frames[0]) is None
    assert hv.counters.no_gateway == 1

    def hear(*senders: GatewayPlane) -> None:
        for sender in senders:
            for remote, frame in sender.due(clock.now):
                if remote.chassis == "hv":
                    assert hv.receive(frame)

    hear(gw1, gw2)
    picked = {hv.choose(WHERE, f).chassis for f in frames}  # type: ignore[union-attr]
    assert picked == {"gw1", "gw2"}
    assert hv.alive() == {"ln": ("gw1", "gw2")}
    for _ in range(5):  # gw1 dies: only gw2 keeps talking
        clock.now += 0.1
        hear(gw2)
    assert {hv.choose(WHERE, f).chassis for f in frames} == {"gw2"}  # type: ignore[union-attr]
    assert hv.status()["downs"] == 1
    for remote, frame in gw2.goodbye():
        if remote.chassis == "hv":
            hv.receive(frame)
    assert hv.choose(WHERE, frames[0]) is None
    assert not hv.receive(b"\x00" * 20)
    assert hv.counters.hellos_malformed == 1


def test_hellos_from_a_chassis_the_sb_does_not_list_are_ignored() -> None:
    clock = Clock()
    hv = plane("hv", (), clock)
    stranger = GatewayPlane(clock)
    stranger.update("gw9", {"ln": "uplink"}, PEERS, {})
    for _remote, frame in stranger.due()[:1]:
        assert hv.receive(frame)
    assert hv.counters.hellos_unknown == 1
    assert hv.choose(WHERE, _tcp()) is None


def test_an_uplink_that_fails_is_retracted_at_the_next_hello() -> None:
    clock, plugged = Clock(), {"uplink"}
    hv, gw1 = plane("hv", (), clock), plane("gw1", ("ln",), clock, plugged)
    for remote, frame in gw1.due():
        if remote.chassis == "hv":
            hv.receive(frame)
    assert hv.alive() == {"ln": ("gw1",)}
    plugged.clear()  # the interface went down: the datapath closed and unplugged it
    last = [frame for remote, frame in gw1.due() if remote.chassis == "hv"]
    assert decode_hello(last[0]) == Hello("gw1", 2, 100, (), leaving=True)
    hv.receive(last[0])
    assert hv.alive() == {"ln": ()}
    clock.now += 1
    assert gw1.due() == []  # silent from now on
    assert gw1.goodbye() == []
    plugged.add("uplink")
    assert next(decode_hello(f).uplinks for _r, f in gw1.due()) == ("ln",)
