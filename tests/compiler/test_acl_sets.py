"""Remote security groups as address sets: ``ls_*_acl_sets`` sets ``reg4`` to the bits of the
groups the peer address belongs to, and rules naming a remote group test its bit."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from compiler.conftest import NBBuilder
from compiler.test_build_switch_pipeline import Net
from netvirt.compiler import stages
from netvirt.compiler.build.acl import SET_BITS, SET_REGISTER
from netvirt.compiler.compile import compile_nb
from netvirt.compiler.translate import all_rules, flow_rules
from netvirt.dataplane.actions import SetField
from netvirt.dataplane.classifier import Classifier
from netvirt.dataplane.drops import DropReason
from netvirt.dataplane.fields import FIELDS, F
from netvirt.southbound.model import SBState

Obj = dict[str, object]


def _syn(src: Obj, dst: Obj, src_ip: str, port: int) -> Ether:
    eth = Ether(src=str(src["mac_address"]), dst=str(dst["mac_address"]))
    dst_ip = str(dst["fixed_ips"][0]["ip_address"])  # type: ignore[index]
    return eth / IP(src=src_ip, dst=dst_ip) / TCP(sport=40000, dport=port, flags="S")


def test_a_member_is_admitted_and_a_stranger_is_not(nbb: NBBuilder) -> None:
    """Neutron's default group admits its own members only: a fixed IP of a member, an
    address inside a member's allowed-address-pair prefix, but not a non-member's address."""
    net = nbb.network("net1", 101)
    v4 = nbb.subnet(net, "sub4", "10.0.0.0/24")
    default, web = nbb.default_group(), nbb.security_group("web")
    target = nbb.port(net, "target", [(v4, "10.0.0.5")], sgs=[default])
    member = nbb.port(net, "member", [(v4, "10.0.0.6")], sgs=[default])
    pair = nbb.port(
        net, "pair", [(v4, "10.0.0.7")], sgs=[default], pairs=[{"ip_address": "10.0.0.128/26"}]
    )
    stranger = nbb.port(net, "stranger", [(v4, "10.0.0.8")], sgs=[web])
    lan = Net(nbb)
    assert lan.delivered(lan.send(member, _syn(member, target, "10.0.0.6", 5555))) == ["target"]
    assert lan.delivered(lan.send(pair, _syn(pair, target, "10.0.0.130", 5555))) == ["target"]
    refused = lan.send(stranger, _syn(stranger, target, "10.0.0.8", 5555))
    assert (refused.outputs, refused.drops) == ([], [DropReason.ACL_DENY])


def _sets_classifier(sb: SBState) -> tuple[Classifier, int]:
    classifier = Classifier()
    for rule in all_rules(sb):
        classifier.add(rule)
    return classifier, stages.stage("ls_out_acl_sets").table


def _bits_of(classifier: Classifier, table: int, datapath: int, addr: int) -> int:
    """The ``reg4`` value ``ls_out_acl_sets`` gives a packet from ``addr``."""
    key = [0] * len(FIELDS)
    key[F("metadata")], key[F("eth.type")], key[F("ip4.src")] = datapath, 0x0800, addr
    rule = classifier.lookup(table, key)
    assert rule is not None  # the stage's default rule catches everything else
    sets = [a for a in rule.actions if isinstance(a, SetField) and a.field == SET_REGISTER]
    return sets[0].value if sets else 0


PREFIXES = st.tuples(st.integers(0, 255), st.sampled_from([24, 26, 28, 30, 32]))


@settings(max_examples=40, deadline=None)
@given(
    memberships=st.lists(st.lists(PREFIXES, min_size=1, max_size=4), min_size=1, max_size=3),
    probes=st.lists(st.integers(0, 255), min_size=1, max_size=16),
)
def test_acl_sets_give_every_group_containing_the_address(
    memberships: list[list[tuple[int, int]]], probes: list[int]
) -> None:
    """Random groups of member prefixes (nested and overlapping): for any source address the
    most specific ``acl_sets`` flow carries exactly the bits of the groups that have a member
    prefix containing it (reference: a linear scan of every member)."""
    nbb = NBBuilder()
    net = nbb.network("net1", 101)
    v4 = nbb.subnet(net, "sub4", "10.0.0.0/16")
    groups = [nbb.security_group(f"g{i}") for i in range(len(memberships))]
    guard = nbb.security_group("guard")
    for group in groups:
        nbb.rule(guard, "ingress", remote_group_id=group["id"])
    nbb.port(net, "guarded", [(v4, "10.0.9.1")], sgs=[guard])
    nets: list[tuple[int, ipaddress.IPv4Network]] = []
    for index, prefixes in enumerate(memberships):
        pairs = []
        for octet, length in prefixes:
            prefix = ipaddress.ip_network(f"10.0.1.{octet}/{length}", strict=False)
            nets.append((index, prefix))
            pairs.append({"ip_address": str(prefix)})
        nbb.port(net, f"m{index}", [(v4, f"10.0.8.{index + 1}")], sgs=[groups[index]], pairs=pairs)
        nets.append((index, ipaddress.ip_network(f"10.0.8.{index + 1}/32")))
    sb = compile_nb(nbb.snapshot())
    classifier, table = _sets_classifier(sb)
    order = sorted(str(g["id"]) for g in groups)  # bits are given in group id order
    bit = {str(g["id"]): 1 << order.index(str(g["id"])) for g in groups}
    for last in [*probes, 1, 2, 3]:
        addr = ipaddress.ip_address(f"10.0.{8 if last < 4 else 1}.{last}")
        expected = 0
        for index, prefix in nets:
            if addr in prefix:
                expected |= bit[str(groups[index]["id"])]
        assert _bits_of(classifier, table, 101, int(addr)) == expected, str(addr)


def test_a_large_remote_group_installs_as_ports_plus_members(nbb: NBBuilder) -> None:
    """10 ports of a switch and a remote group of 5,000 members: the rule is 10 classifier
    rules and the set 5,000 (the expanded match, 50,000, would exceed the expansion limit and
    could not be installed at all)."""
    net, other = nbb.network("net1", 101), nbb.network("net2", 102)
    v4, far = nbb.subnet(net, "sub4", "10.0.0.0/24"), nbb.subnet(other, "far", "10.8.0.0/16")
    crowd, guard = nbb.security_group("crowd"), nbb.security_group("guard")
    nbb.rule(guard, "ingress", remote_group_id=crowd["id"])
    for i in range(10):
        nbb.port(net, f"vm{i}", [(v4, f"10.0.0.{i + 10}")], sgs=[guard])
    first = ipaddress.ip_address("10.8.0.1")
    for i in range(5000):
        nbb.port(other, f"c{i}", [(far, str(first + i))], sgs=[crowd])
    sb = compile_nb(nbb.snapshot())
    acl = stages.stage("ls_out_acl").table
    sets = stages.stage("ls_out_acl_sets").table
    flows = [f for f in sb.flows if f.datapath == 101 and f.stage.table in (acl, sets)]
    rules = [r for f in flows for r in flow_rules(f, sb)]  # raises past the expansion limit
    rule_flows = [f for f in flows if f.provenance.nb_kind == "security_group_rule"]
    assert len([r for f in rule_flows for r in flow_rules(f, sb)]) == 10
    assert len([r for r in rules if r.table == sets and r.priority > 0]) == 5000


def test_groups_beyond_the_register_width_keep_the_listed_match(nbb: NBBuilder) -> None:
    """More remote groups in one switch than ``reg4`` has bits: the first SET_BITS (by id)
    use their bit, the others list their members' addresses as before."""
    net = nbb.network("net1", 101)
    v4 = nbb.subnet(net, "sub4", "10.0.0.0/16")
    guard = nbb.security_group("guard")
    groups = [nbb.security_group(f"g{i:02d}") for i in range(SET_BITS + 2)]
    for i, group in enumerate(groups):
        nbb.rule(guard, "ingress", remote_group_id=group["id"])
        nbb.port(net, f"m{i}", [(v4, f"10.0.1.{i + 1}")], sgs=[group])
    nbb.port(net, "guarded", [(v4, "10.0.0.1")], sgs=[guard])
    sb = compile_nb(nbb.snapshot())
    acl = [
        f
        for f in sb.flows
        if f.stage.name == "ls_out_acl" and f.provenance.nb_kind == "security_group_rule"
    ]
    texts = [str(f.match) for f in acl]
    by_bit = [t for t in texts if f"symbol='{SET_REGISTER}'" in t]
    listed = [t for t in texts if "symbol='ip4.src'" in t]
    assert (len(by_bit), len(listed)) == (SET_BITS, 2)
    classifier, table = _sets_classifier(sb)
    order = sorted(str(g["id"]) for g in groups)
    for i, group in enumerate(groups):
        addr = int(ipaddress.ip_address(f"10.0.1.{i + 1}"))
        rank = order.index(str(group["id"]))
        assert _bits_of(classifier, table, 101, addr) == (1 << rank if rank < SET_BITS else 0)
