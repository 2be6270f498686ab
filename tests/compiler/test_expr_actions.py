"""Action text: every form, port and stage resolution, error positions, round trips."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler.expr_strategies import PORT_KEYS, PORT_NAMES, action_lists
from netvirt.compiler.expr.actions_text import format_actions, parse_actions
from netvirt.compiler.expr.parser import ParseError
from netvirt.compiler.stages import stage
from netvirt.dataplane import actions as act
from netvirt.dataplane import fields as fl
from netvirt.dataplane.drops import DropReason

IP = 0x0A000005
MAC = 0xFA163E000001
V6 = 0xFD00 << 112 | 1


def parse(text: str) -> tuple[object, ...]:
    return parse_actions(text, PORT_KEYS.__getitem__)


def fmt(actions: tuple[object, ...]) -> str:
    return format_actions(actions, PORT_NAMES.__getitem__)


# (canonical text, object): parse(text) == (object,) and fmt((object,)) == text
FORMS: list[tuple[str, object]] = [
    ("next;", act.Next()),
    ("next(ls_in_acl);", act.Next(stage("ls_in_acl").table)),
    ("next(900);", act.Next(900)),
    ("output;", act.Output()),
    ("drop;", act.Drop()),
    ("drop(acl_deny);", act.Drop(DropReason.ACL_DENY)),
    ("eth.dst = 00:11:22:33:44:55;", act.SetField("eth.dst", 0x001122334455)),
    ('outport = "lsp1";', act.SetField("outport", 1)),
    ('inport = "we\\"ird\\\\name";', act.SetField("inport", 2)),
    ("reg0 = 10.0.0.5;", act.SetField("reg0", IP)),
    ("xreg0 = fd00::1;", act.SetField("xreg0", V6)),
    ("reg2 = 5/0xff;", act.SetField("reg2", 5, 0xFF)),
    ("ip4.src = 10.0.0.0/24;", act.SetField("ip4.src", 0x0A000000, 0xFFFFFF00)),
    ("eth.type = 0x800;", act.SetField("eth.type", 0x800)),
    ("flags.loopback = 1;", act.SetField("flags", fl.FLAG_LOOPBACK, fl.FLAG_LOOPBACK)),
    ("flags.nat_done = 0;", act.SetField("flags", 0, fl.FLAG_NAT_DONE)),
    ("flags = 0x5/0x5;", act.SetField("flags", 5, 5)),
    ("tp.dst = 8080;", act.SetField("tp.dst", 8080)),
    ("ip.dscp = 46;", act.SetField("ip.dscp", 46)),
    ("ip.ttl--;", act.DecTTL()),
    ("eth.src <-> eth.dst;", act.Exchange("eth.src", "eth.dst")),
    ("ip4.dst = ip4.src;", act.Move("ip4.dst", "ip4.src")),
    ("outport = inport;", act.Move("outport", "inport")),
    ("ct_next;", act.CtNext()),
    ("ct_commit;", act.CtCommit()),
    ("ct_commit(mark=1);", act.CtCommit(1)),
    ("ct_clear;", act.CtClear()),
    ("ct_dnat;", act.CtDnat()),
    ("ct_dnat(10.0.0.5);", act.CtDnat(IP)),
    ("ct_dnat(10.0.0.5:8080);", act.CtDnat(IP, 4, 8080)),
    ("ct_dnat(fd00::1);", act.CtDnat(V6, 6)),
    ("ct_dnat([fd00::1]:80);", act.CtDnat(V6, 6, 80)),
    ("ct_snat;", act.CtSnat()),
    ("ct_snat(172.24.4.10);", act.CtSnat(0xAC18040A)),
    ("ct_snat(172.24.4.2, 1024-65535);", act.CtSnat(0xAC180402, 4, (1024, 65535))),
    (
        "ct_lb(10.0.0.5:80, 10.0.0.6:80; algorithm=SOURCE_IP);",
        act.CtLb((act.Backend(IP, 80), act.Backend(IP + 1, 80)), "SOURCE_IP"),
    ),
    (
        "ct_lb([fd00::1]:443, 10.0.0.5; affinity_timeout=60);",
        act.CtLb((act.Backend(V6, 443, 6), act.Backend(IP, None)), affinity_timeout=60),
    ),
    ("ct_lb(10.0.0.5:80);", act.CtLb((act.Backend(IP, 80),))),
    ("ct_lb();", act.CtLb(())),
    (
        "icmp_error(type=11, code=0) { eth.src <-> eth.dst; output; };",
        act.EmitIcmpError(11, 0, (act.Exchange("eth.src", "eth.dst"), act.Output())),
    ),
    ("icmp_error(type=3, code=4, mtu=1400);", act.EmitIcmpError(3, 4, (), 1400)),
    ("arp_request;", act.EmitArpRequest()),
    (
        "arp_request { eth.dst = ff:ff:ff:ff:ff:ff; output; };",
        act.EmitArpRequest((act.SetField("eth.dst", 0xFFFFFFFFFFFF), act.Output())),
    ),
    (
        "dhcp_reply(offer=10.0.0.5, server=10.0.0.1, mac=fa:16:3e:00:00:01, "
        "netmask=255.255.255.0, lease=43200, opts={3:10.0.0.1, 6:{8.8.8.8, 8.8.4.4}, "
        '26:1450, 15:"example.org", 121:{10.1.0.0/16->10.0.0.1, 0.0.0.0/0->10.0.0.254}, '
        '200:0x0102, 66:""}) { output; };',
        act.DhcpReply(
            IP,
            0x0A000001,
            MAC,
            0xFFFFFF00,
            43200,
            (
                act.DhcpOption(3, bytes([10, 0, 0, 1])),
                act.DhcpOption(6, bytes([8, 8, 8, 8, 8, 8, 4, 4])),
                act.DhcpOption(26, (1450).to_bytes(2)),
                act.DhcpOption(15, b"example.org"),
                act.DhcpOption(121, bytes([16, 10, 1, 10, 0, 0, 1, 0, 10, 0, 0, 254])),
                act.DhcpOption(200, b"\x01\x02"),
                act.DhcpOption(66, b""),
            ),
            (act.Output(),),
        ),
    ),
    (
        "nd_na(target=fd00::1, mac=fa:16:3e:00:00:01, router) { output; };",
        act.NdAdvert(V6, MAC, True, (act.Output(),)),
    ),
    ("nd_na(target=fd00::1, mac=fa:16:3e:00:00:01);", act.NdAdvert(V6, MAC)),
    (
        "nd_ra(mac=fa:16:3e:00:00:01, src=fe80::1, mtu=1500, managed, other, "
        "prefixes={(fd00::/64, 192)}) { output; };",
        act.RouterAdvert(
            MAC, 0xFE80 << 112 | 1, ((0xFD00 << 112, 64, 192),), 1500, True, True, (act.Output(),)
        ),
    ),
    ("put_mac_binding;", act.PutMacBinding()),
    ("lookup_mac_binding;", act.LookupMacBinding()),
]


@pytest.mark.parametrize(("text", "obj"), FORMS, ids=[t[:30] for t, _ in FORMS])
def test_every_action_form(text: str, obj: object) -> None:
    assert parse(text) == (obj,)
    assert fmt((obj,)) == text


@pytest.mark.parametrize(
    ("text", "obj"),
    [
        ("icmp4_error(type=11, code=0);", act.EmitIcmpError(11, 0)),
        ("icmp6_error(code=0, type=3);", act.EmitIcmpError(3, 0)),
        ("tcp.dst = 80;", act.SetField("tp.dst", 80)),
        ("udp.src = 0x44;", act.SetField("tp.src", 68)),
        ("drop(explicit_drop);", act.Drop()),
        ("ct_commit(mark=0x10);", act.CtCommit(16)),
        ("ct_lb(10.0.0.5:80; algorithm=ROUND_ROBIN);", act.CtLb((act.Backend(IP, 80),))),
        ("outport = 7;", act.SetField("outport", 7)),
        ("tcp.src <-> tcp.dst;", act.Exchange("tp.src", "tp.dst")),
    ],
)
def test_aliases_and_alternative_spellings(text: str, obj: object) -> None:
    assert parse(text) == (obj,)


def test_sequences_and_empty_text() -> None:
    assert parse("") == ()
    assert parse("  ct_commit ;next ;  ") == (act.CtCommit(), act.Next())
    assert fmt(()) == ""
    assert fmt((act.CtCommit(), act.Next())) == "ct_commit; next;"


def test_ports_without_resolver() -> None:
    assert format_actions((act.SetField("outport", 3),)) == "outport = 3;"
    assert parse_actions("outport = 3;") == (act.SetField("outport", 3),)
    with pytest.raises(ParseError, match="need a resolver") as info:
        parse_actions('next; outport = "lsp1";')
    assert info.value.position == 16


def test_custom_stage_resolver() -> None:
    assert parse_actions("next(x);", resolve_stage={"x": 99}.__getitem__) == (act.Next(99),)


def test_printer_rejects_non_actions() -> None:
    with pytest.raises(ValueError, match="not an action"):
        format_actions((object(),))
    with pytest.raises(ValueError, match="without an address"):
        format_actions((act.CtDnat(None, 4, 80),))


@pytest.mark.parametrize(
    ("text", "position", "message"),
    [
        ("next", 4, "';'"),
        ("next(nosuch);", 5, "unknown stage"),
        ("drop(nosuch);", 5, "unknown drop reason"),
        ('outport = "nosuch";', 10, "unknown port"),
        ("frobnicate;", 0, "not an action or a field"),
        ("metadata = 1;", 0, "read-only"),
        ("ct.est = 1;", 0, "read-only"),
        ("eth.src == 00:11:22:33:44:55;", 8, "'='"),
        ("eth.src = 10.0.0.1;", 10, "ipv4 value for a mac field"),
        ("ip.ttl = 256;", 9, "does not fit in 8 bits"),
        ("flags.loopback = 2;", 17, "does not fit in 1 bits"),
        ("flags.loopback = 1/1;", 17, "not a mask"),
        ("eth.type--;", 0, "only ip.ttl--"),
        ("eth.src = ip4.src;", 10, "eth.src is 48 bits but ip4.src is 32"),
        ("eth.src <-> tcp;", 12, "not a writable whole field"),
        ("flags.loopback <-> flags.skip_acl;", 0, "whole fields"),
        ("ct_commit(mark=1, mark=2);", 18, "given twice"),
        ("ct_commit(color=1);", 10, "expected an argument"),
        ("ct_snat(10.0.0.1:80);", 8, "not ip:port"),
        ("ct_snat(10.0.0.1, 2000-1000);", 18, "port range"),
        ("ct_lb(10.0.0.5:99999);", 6, "ipv4:port"),
        ("ct_lb(10.0.0.5; algorithm=RANDOM);", 26, "algorithm must be"),
        ("icmp_error(type=3);", 18, "missing argument(s): code"),
        ("icmp_error(type=256, code=0);", 16, "does not fit"),
        ("arp_request { output; ", 22, "'}'"),
        ("dhcp_reply(offer=10.0.0.5);", 26, "missing"),
        ("dhcp_reply(offer=fd00::1);", 17, "must be a ipv4 value"),
        ("dhcp_reply(opts={3:1});", 19, "takes no integer"),
        ("dhcp_reply(opts={26:70000});", 20, "2 bytes wide"),
        ("dhcp_reply(opts={300:1});", 17, "0..255"),
        ("dhcp_reply(opts={200:0x123});", 21, "even number"),
        ("nd_ra(prefixes={(10.0.0.0/8, 0)});", 17, "IPv6"),
        ("arp_request " + "{ arp_request " * 70, 12 + 14 * 64, "nesting"),
    ],
)
def test_error_positions(text: str, position: int, message: str) -> None:
    with pytest.raises(ParseError) as info:
        parse(text)
    assert message in info.value.message
    assert info.value.position == position


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(action_lists)
def test_round_trip(actions: tuple[object, ...]) -> None:
    text = fmt(actions)
    assert parse(text) == actions
    assert fmt(parse(text)) == text


TOKENS = [*'(){};,=<>-:[]/" 0123456789abcdefx.', "next", "ct_lb", "outport", "dhcp_reply"]
TOKENS += ["opts", "ip.ttl", "eth.src", "icmp_error", "type", "algorithm", "->", "<->"]


@settings(max_examples=400)
@given(st.one_of(st.text(max_size=40), st.lists(st.sampled_from(TOKENS), max_size=30).map("".join)))
def test_fuzz_only_parse_errors(text: str) -> None:
    result = _parse_or_error(text)
    if isinstance(result, ParseError):
        assert 0 <= result.position <= len(text)
    else:
        assert parse(fmt(result)) == result


def _parse_or_error(text: str) -> tuple[object, ...] | ParseError:
    try:
        return parse(text)
    except ParseError as e:
        return e
