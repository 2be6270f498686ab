"""The one stage table of the logical pipelines (declared once, as data).

Code and tests name stages (``ls_in_acl``); table numbers are derived from the
position in this table and never written by hand. Each logical datapath runs
its ingress pipeline, then (after ``output``) its egress pipeline.

Physical table numbers: the four pipelines are laid out one after another so
that every stage has a distinct table in the datapath classifier
(``Stage.table``); the datapath's ``metadata`` field tells datapaths apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

DatapathKind = Literal["switch", "router"]
Pipeline = Literal["ingress", "egress"]


@dataclass(frozen=True, slots=True)
class Stage:
    kind: DatapathKind
    pipeline: Pipeline
    index: int
    name: str
    table: int
    doc: str


_TABLE: list[tuple[DatapathKind, Pipeline, list[tuple[str, str]]]] = [
    (
        "switch",
        "ingress",
        [
            ("ls_in_port_sec_l2", "admission: known inport, source MAC of the port"),
            ("ls_in_port_sec_ip", "source IP of the port (fixed IPs, allowed address pairs)"),
            ("ls_in_port_sec_nd", "ARP/ND spoofing: sender addresses must be the port's"),
            ("ls_in_pre_acl", "mark traffic that needs conntrack for security groups"),
            ("ls_in_pre_lb", "mark traffic to load balancer VIPs for conntrack"),
            ("ls_in_pre_stateful", "send marked traffic through conntrack (ct_next)"),
            ("ls_in_acl_sets", "remote security groups the destination is in (reg4 bits)"),
            ("ls_in_acl", "security group rules for traffic leaving the port (egress rules)"),
            ("ls_in_qos_mark", "DSCP marking"),
            ("ls_in_lb", "VIP -> member selection (ct_lb)"),
            ("ls_in_stateful", "commit allowed new connections (ct_commit)"),
            ("ls_in_arp_rsp", "ARP and ND responder for known addresses"),
            ("ls_in_dhcp_rsp", "DHCPv4 server, DHCPv6 and router advertisements"),
            ("ls_in_l2_lkup", "destination MAC -> outport; broadcast/unknown -> flood"),
        ],
    ),
    (
        "switch",
        "egress",
        [
            ("ls_out_pre_acl", "mark traffic that needs conntrack for security groups"),
            ("ls_out_pre_stateful", "send marked traffic through conntrack"),
            ("ls_out_acl_sets", "remote security groups the source is in (reg4 bits)"),
            ("ls_out_acl", "security group rules for traffic entering the port (ingress rules)"),
            ("ls_out_stateful", "commit allowed new connections"),
            ("ls_out_port_sec_ip", "destination IP must be the port's"),
            ("ls_out_port_sec_l2", "destination MAC must be the port's (or broadcast)"),
        ],
    ),
    (
        "router",
        "ingress",
        [
            ("lr_in_admission", "destination MAC must be the router port's (or broadcast)"),
            ("lr_in_lookup_neighbor", "learn MAC bindings from ARP/ND"),
            ("lr_in_ip_input", "router's own IPs: ICMP echo, ARP replies; TTL checks"),
            ("lr_in_unsnat", "reverse SNAT of replies to the router's gateway/floating IPs"),
            ("lr_in_dnat", "floating IP DNAT"),
            ("lr_in_ip_routing", "longest-prefix match: next hop in reg0, output port"),
            ("lr_in_ip_routing_ecmp", "choose one of several equal-cost next hops"),
            ("lr_in_arp_resolve", "next hop IP -> destination MAC"),
            ("lr_in_arp_request", "unknown next hop: send an ARP/ND request instead"),
        ],
    ),
    (
        "router",
        "egress",
        [
            ("lr_out_undnat", "reverse DNAT of replies from floating-IP ports"),
            ("lr_out_snat", "floating IP SNAT and gateway SNAT (masquerade)"),
            ("lr_out_delivery", "source MAC of the output port; deliver"),
        ],
    ),
]


def _build() -> dict[str, Stage]:
    stages: dict[str, Stage] = {}
    table = 0
    for kind, pipeline, entries in _TABLE:
        for index, (name, doc) in enumerate(entries):
            stages[name] = Stage(kind, pipeline, index, name, table, doc)
            table += 1
    return stages


STAGES: dict[str, Stage] = _build()
BY_TABLE: dict[int, Stage] = {s.table: s for s in STAGES.values()}


def stage(name: str) -> Stage:
    try:
        return STAGES[name]
    except KeyError:
        raise KeyError(f"unknown stage {name!r}") from None


def first(kind: DatapathKind, pipeline: Pipeline) -> Stage:
    return next(
        s for s in STAGES.values() if s.kind == kind and s.pipeline == pipeline and s.index == 0
    )


def pipeline_stages(kind: DatapathKind, pipeline: Pipeline) -> list[Stage]:
    return [s for s in STAGES.values() if s.kind == kind and s.pipeline == pipeline]


def next_table(table: int) -> int | None:
    """The table after ``table`` in the same pipeline, or None at its end (a dict lookup:
    the datapath asks this once per table per packet)."""
    return _NEXT[table]


def _following(table: int) -> int | None:
    current = BY_TABLE[table]
    following = BY_TABLE.get(table + 1)
    if following is None or (following.kind, following.pipeline) != (
        current.kind,
        current.pipeline,
    ):
        return None
    return following.table


_NEXT: dict[int, int | None] = {table: _following(table) for table in BY_TABLE}
