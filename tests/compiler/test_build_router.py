"""Logical router flows (build/l3.py): goldens per feature and semantic checks.

NB state is built through the API (real routers, interfaces, gateways), with
named ports and fixed MACs so the normalized goldens are stable. Semantic
checks look a flow key up in one stage of a router datapath with the match
language's reference evaluator (``normalize.evaluate``): the highest priority
flow that matches is the one the datapath would run.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.golden import check_golden, names, normalize
from conftest import Api
from netvirt.compiler import nb as nb_module
from netvirt.compiler.build import l3
from netvirt.compiler.compile import compile_nb, conflicts
from netvirt.compiler.expr.actions_text import format_action
from netvirt.compiler.expr.normalize import evaluate
from netvirt.compiler.expr.printer import format_match
from netvirt.compiler.lflow import FlowSink, LogicalFlow
from netvirt.compiler.nb import NBSnapshot
from netvirt.compiler.stages import pipeline_stages
from netvirt.compiler.translate import all_rules
from netvirt.dataplane import actions as A  # noqa: N812
from netvirt.dataplane.drops import DropReason
from netvirt.dataplane.fields import FLAG_LOOPBACK, F, new_key
from netvirt.northbound.db import Database
from netvirt.southbound.model import PortBinding, SBState

EXT_CIDR = "203.0.113.0/24"

# ---------------------------------------------------------------- building NB state


@dataclass
class Lab:
    """NB objects created through the API with readable names and fixed MACs."""

    db: Database
    admin: Api
    macs: int = 0
    ids: dict[str, str] = field(default_factory=dict)

    def mac(self) -> str:
        self.macs += 1
        return f"fa:16:3e:00:00:{self.macs:02x}"

    def network(self, api: Api, name: str, cidr: str, **attrs: Any) -> tuple[str, str]:
        net = api.ok("POST", "/v2.0/networks", {"network": {"name": name, **attrs}})["network"]
        body: dict[str, Any] = {"network_id": net["id"], "cidr": cidr, "name": f"{name}-sub"}
        if ipaddress.ip_network(cidr).version == 6:
            body["ip_version"] = 6
        sub = api.ok("POST", "/v2.0/subnets", {"subnet": body})["subnet"]
        self.ids[name], self.ids[f"{name}-sub"] = net["id"], sub["id"]
        return net["id"], sub["id"]

    def external(self, name: str = "ext", cidr: str = EXT_CIDR) -> tuple[str, str]:
        return self.network(self.admin, name, cidr, **{"router:external": True})

    def port(
        self, api: Api, net: str, name: str, ip: str | None = None, **attrs: Any
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"network_id": net, "name": name, "mac_address": self.mac()}
        body |= attrs
        if ip is not None:
            body["fixed_ips"] = [{"ip_address": ip}]
        port: dict[str, Any] = api.ok("POST", "/v2.0/ports", {"port": body})["port"]
        self.ids[name] = port["id"]
        return port

    def router(self, api: Api, name: str, ext: str | None = None, **attrs: Any) -> str:
        gateway = attrs.pop("gw", {})
        body = dict(attrs, name=name)
        if ext is not None:
            body["external_gateway_info"] = {"network_id": ext, **gateway}
        rid = str(api.ok("POST", "/v2.0/routers", {"router": body})["router"]["id"])
        self.ids[name] = rid
        if ext is not None:
            self.name_gateway(name)
        return rid

    def name_gateway(self, router: str) -> None:
        """Give the API-made gateway port a name and a fixed MAC (admin only)."""
        _, found = self.admin.get("/v2.0/ports", device_id=self.ids[router])
        for port in found["ports"]:
            if port["device_owner"] == "network:router_gateway":
                self.rename(port["id"], f"{router}-gw")

    def interface(self, api: Api, router: str, net: str) -> None:
        """Plug ``router`` into ``net``'s subnet (on its gateway address), then name the
        port and give it a fixed MAC (as admin: MAC changes are an operator's job)."""
        body = {"subnet_id": self.ids[f"{net}-sub"]}
        info = api.ok("PUT", f"/v2.0/routers/{self.ids[router]}/add_router_interface", body)
        self.rename(info["port_id"], f"{router}-{net}")

    def rename(self, port_id: str, name: str) -> None:
        body = {"port": {"name": name, "mac_address": self.mac()}}
        self.admin.ok("PUT", f"/v2.0/ports/{port_id}", body)
        self.ids[name] = port_id

    def routes(self, api: Api, router: str, routes: list[tuple[str, str]]) -> None:
        body = {"routes": [{"destination": d, "nexthop": h} for d, h in routes]}
        api.ok("PUT", f"/v2.0/routers/{self.ids[router]}", {"router": body})

    def compile(self) -> Compiled:
        nb = nb_module.load(self.db)
        return Compiled(nb, compile_nb(nb))


@dataclass
class Compiled:
    nb: NBSnapshot
    sb: SBState

    def dp(self, router_id: str) -> int:
        return self.sb.datapath_by_name(router_id).key

    def flows(self, dp: int, stage: str | None = None) -> list[LogicalFlow]:
        return [
            f
            for f in self.sb.flows
            if f.datapath == dp and (stage is None or f.stage.name == stage)
        ]

    def port(self, name: str) -> PortBinding:
        return self.sb.ports[name]

    def lrp(self, nb_port_id: str) -> PortBinding:
        return self.sb.ports[f"lrp-{nb_port_id}"]

    def hit(self, dp: int, stage: str, key: list[int]) -> LogicalFlow:
        """The flow the datapath runs for ``key`` in ``stage`` (unambiguous)."""
        matching = [f for f in self.flows(dp, stage) if evaluate(f.match, key, self.sb.port_key)]
        assert matching, f"no flow of {stage} matches"
        top = max(f.priority for f in matching)
        winners = {f.actions for f in matching if f.priority == top}
        assert len(winners) == 1, f"ambiguous {stage} at priority {top}: {winners}"
        return next(f for f in matching if f.priority == top)


@pytest.fixture
def lab(db: Database, admin: Api) -> Lab:
    return Lab(db, admin)


# ---------------------------------------------------------------- flow keys


def packet(**fields: int) -> list[int]:
    """A flow key from field values (``ip4_dst`` for ``ip4.dst``)."""
    key = new_key()
    for name, value in fields.items():
        key[F(name.replace("_", "."))] = value
    return key


def ip(text: str) -> int:
    return int(ipaddress.ip_address(text))


def mac(text: str) -> int:
    return int(text.replace(":", ""), 16)


def ipv4(src: str, dst: str, inport: PortBinding, ttl: int = 64, proto: int = 6) -> list[int]:
    return packet(
        eth_type=0x800,
        ip4_src=ip(src),
        ip4_dst=ip(dst),
        ip_ttl=ttl,
        ip_proto=proto,
        inport=inport.key,
        eth_dst=inport.mac,
    )


def ipv6(src: str, dst: str, inport: PortBinding, ttl: int = 64, proto: int = 6) -> list[int]:
    return packet(
        eth_type=0x86DD,
        ip6_src=ip(src),
        ip6_dst=ip(dst),
        ip_ttl=ttl,
        ip_proto=proto,
        inport=inport.key,
        eth_dst=inport.mac,
    )


def arp_request(spa: str, tpa: str, inport: PortBinding) -> list[int]:
    return packet(
        eth_type=0x806,
        eth_dst=0xFFFFFFFFFFFF,
        arp_op=1,
        arp_spa=ip(spa),
        arp_tpa=ip(tpa),
        arp_sha=mac("fa:16:3e:aa:bb:cc"),
        inport=inport.key,
    )


def set_value(actions: Iterable[object], name: str) -> int | None:
    for act in actions:
        if isinstance(act, A.SetField) and act.field == name and act.mask is None:
            return act.value
    return None


# ---------------------------------------------------------------- goldens


def format_actions(actions: Iterable[object], ports: dict[int, str]) -> str:
    """The action printer, plus ``select_ecmp(n)`` (this builder's new action)."""

    def namer(key: int) -> str:
        return ports.get(key, f"<key {key}>")

    parts = []
    for act in actions:
        text = f"select_ecmp({act.count})" if isinstance(act, A.SelectEcmp) else None
        parts.append((text or format_action(act, namer)) + ";")
    return " ".join(parts)


def router_dump(
    compiled: Compiled,
    dp: int,
    stages: Iterable[str],
    keep: Callable[[LogicalFlow], bool] = lambda _f: True,
) -> str:
    """Normalized lines of one router's flows in ``stages`` (uuids named, sorted)."""
    sb, wanted = compiled.sb, set(stages)
    ports = {pb.key: pb.name for pb in sb.ports.values() if pb.datapath == dp}
    mapping = names(compiled.nb)
    lines = []
    for flow in compiled.flows(dp):
        if flow.stage.name not in wanted or not keep(flow):
            continue
        text = (
            f"{flow.stage.name} {flow.priority} {format_match(flow.match)} => "
            f"{format_actions(flow.actions, ports)} [{flow.provenance}]"
        )
        # twice: a name may hold another object's uuid (a VIP port names its LB)
        text = normalize(normalize(text, mapping), mapping)
        lines.append((flow.stage.table, -flow.priority, text))
    return "".join(line + "\n" for *_, line in sorted(lines))


@dataclass
class Tenant:
    """alice's usual set-up: two subnets and an IPv6 one behind router r1."""

    lab: Lab
    api: Api
    router: str = ""

    def build(self, ext: str | None = None, **router_attrs: Any) -> Tenant:
        lab, api = self.lab, self.api
        lab.network(api, "web", "10.0.1.0/24")
        lab.network(api, "db", "10.0.2.0/24")
        lab.network(api, "v6", "2001:db8:1::/64")
        self.router = lab.router(api, "r1", ext, **router_attrs)
        lab.interface(api, "r1", "web")
        lab.interface(api, "r1", "db")
        lab.interface(api, "r1", "v6")
        lab.port(api, lab.ids["web"], "vm1", "10.0.1.10")
        lab.port(api, lab.ids["db"], "vm2", "10.0.2.20")
        return self


def test_connected_routes_golden(lab: Lab, alice: Api) -> None:
    tenant = Tenant(lab, alice).build()
    compiled = lab.compile()
    stages = ("lr_in_admission", "lr_in_lookup_neighbor", "lr_in_ip_routing", "lr_out_delivery")
    check_golden("router_connected", router_dump(compiled, compiled.dp(tenant.router), stages))


def test_static_routes_and_ecmp_golden(lab: Lab, alice: Api) -> None:
    tenant = Tenant(lab, alice).build()
    routes = [
        ("192.168.0.0/16", "10.0.1.50"),
        ("192.168.0.0/16", "10.0.2.50"),
        ("192.168.7.0/24", "10.0.2.60"),
        ("2001:db8:99::/48", "2001:db8:1::99"),
    ]
    lab.routes(alice, "r1", routes)
    compiled = lab.compile()
    stages = ("lr_in_ip_routing", "lr_in_ip_routing_ecmp")

    def static(flow: LogicalFlow) -> bool:
        return "connected" not in flow.provenance.note and flow.priority != 1

    text = router_dump(compiled, compiled.dp(tenant.router), stages, static)
    check_golden("router_static_ecmp", text)


def test_gateway_default_route_golden(lab: Lab, alice: Api) -> None:
    ext, _ = lab.external()
    tenant = Tenant(lab, alice).build(ext)
    compiled = lab.compile()
    stages = ("lr_in_ip_routing", "lr_in_arp_resolve", "lr_in_arp_request")
    check_golden("router_gateway", router_dump(compiled, compiled.dp(tenant.router), stages))


def test_icmp_echo_golden(lab: Lab, alice: Api) -> None:
    ext, _ = lab.external()
    tenant = Tenant(lab, alice).build(ext)
    compiled = lab.compile()
    answers = {90, 80, 60}
    text = router_dump(
        compiled,
        compiled.dp(tenant.router),
        ["lr_in_ip_input"],
        lambda f: f.priority in answers and f.provenance.builder == "l3",
    )
    check_golden("router_icmp_echo", text)


def test_ttl_golden(lab: Lab, alice: Api) -> None:
    tenant = Tenant(lab, alice).build()
    compiled = lab.compile()
    text = router_dump(
        compiled,
        compiled.dp(tenant.router),
        ["lr_in_ip_input", "lr_in_ip_routing"],
        lambda f: f.priority in (40, 41, l3.PRIO_NO_ROUTE),
    )
    check_golden("router_ttl", text)


def test_ip_input_sanity_golden(lab: Lab, alice: Api) -> None:
    tenant = Tenant(lab, alice).build()
    compiled = lab.compile()
    text = router_dump(
        compiled,
        compiled.dp(tenant.router),
        ["lr_in_ip_input"],
        lambda f: f.priority in (100, 85, 0),
    )
    check_golden("router_ip_input_sanity", text)


def test_arp_resolve_golden(lab: Lab, alice: Api) -> None:
    tenant = Tenant(lab, alice).build()
    lb = {"name": "lb1", "vip_subnet_id": lab.ids["db-sub"], "vip_address": "10.0.2.100"}
    alice.ok("POST", "/v2/lbaas/loadbalancers", {"loadbalancer": lb})
    lab.port(alice, lab.ids["v6"], "vm6", "2001:db8:1::10")
    compiled = lab.compile()
    stages = ("lr_in_arp_resolve", "lr_in_arp_request")
    text = router_dump(compiled, compiled.dp(tenant.router), stages)
    for port in compiled.nb.ports:  # the VIP port's MAC is random
        if port["device_owner"] == "Octavia":
            text = text.replace(port["mac_address"], "<vip-mac>")
    check_golden("router_arp_resolve", text)


# ---------------------------------------------------------------- semantics


@pytest.fixture
def tenant(lab: Lab, alice: Api) -> tuple[Tenant, Compiled]:
    ext, _ = lab.external()
    tenant = Tenant(lab, alice).build(ext)
    lab.routes(alice, "r1", [("192.168.0.0/16", "10.0.1.50"), ("192.168.0.0/16", "10.0.2.50")])
    return tenant, lab.compile()


def test_router_flows_translate_and_never_conflict(tenant: tuple[Tenant, Compiled]) -> None:
    t, compiled = tenant
    dp = compiled.dp(t.router)
    flows = compiled.flows(dp)
    assert conflicts(flows) == []
    assert len(all_rules(compiled.sb, flows)) >= len(flows)  # every match is translatable
    for flow in flows:
        assert flow.provenance.builder in ("l3", "nat")
        assert flow.provenance.nb_id, flow


def test_every_router_stage_has_a_default(tenant: tuple[Tenant, Compiled]) -> None:
    t, compiled = tenant
    dp = compiled.dp(t.router)
    defaults = {f.stage.name for f in compiled.flows(dp) if f.priority == 0}
    expected = {s.name for way in ("ingress", "egress") for s in pipeline_stages("router", way)}
    assert defaults == expected


def test_admission(tenant: tuple[Tenant, Compiled]) -> None:
    t, c = tenant
    dp, web = c.dp(t.router), c.lrp(t.lab.ids["r1-web"])
    ok = ipv4("10.0.1.10", "10.0.2.20", web)
    assert c.hit(dp, "lr_in_admission", ok).actions == (A.Next(),)
    other_mac = ok.copy()
    other_mac[F("eth.dst")] = mac("fa:16:3e:99:99:99")
    assert isinstance(c.hit(dp, "lr_in_admission", other_mac).actions[0], A.Drop)
    db = c.lrp(t.lab.ids["r1-db"])
    wrong_port = ok.copy()
    wrong_port[F("inport")] = db.key  # web's MAC arriving on db's port
    assert isinstance(c.hit(dp, "lr_in_admission", wrong_port).actions[0], A.Drop)
    assert c.hit(dp, "lr_in_admission", arp_request("10.0.1.10", "10.0.1.1", web)).actions == (
        A.Next(),
    )
    tagged = ok.copy()
    tagged[F("vlan.present")] = 1
    assert c.hit(dp, "lr_in_admission", tagged).actions == (A.Drop(DropReason.PORT_SECURITY_MAC),)


def test_longest_prefix_match(tenant: tuple[Tenant, Compiled]) -> None:
    t, c = tenant
    dp, web = c.dp(t.router), c.lrp(t.lab.ids["r1-web"])
    gw = c.lrp(t.lab.ids["r1-gw"])
    db = c.lrp(t.lab.ids["r1-db"])
    connected = c.hit(dp, "lr_in_ip_routing", ipv4("10.0.1.10", "10.0.2.20", web)).actions
    assert A.Move("reg0", "ip4.dst") in connected
    assert set_value(connected, "outport") == db.key
    assert set_value(connected, "reg1") == ip("10.0.2.1")
    assert set_value(connected, "eth.src") == db.mac
    assert connected[0] == A.DecTTL()
    ecmp = c.hit(dp, "lr_in_ip_routing", ipv4("10.0.1.10", "192.168.3.4", web)).actions
    assert A.SelectEcmp(2) in ecmp
    default = c.hit(dp, "lr_in_ip_routing", ipv4("10.0.1.10", "8.8.8.8", web)).actions
    assert set_value(default, "reg0") == ip("203.0.113.1")  # the external subnet's gateway
    assert set_value(default, "outport") == gw.key
    v6 = c.port(f"lrp-{t.lab.ids['r1-v6']}")
    no_route = c.hit(dp, "lr_in_ip_routing", ipv6("2001:db8:1::10", "2001:db8:2::1", v6)).actions
    assert no_route[0] == A.EmitIcmpError(1, 0, no_route[0].then)  # type: ignore[attr-defined]


def test_ecmp_members_pick_next_hop_and_port(tenant: tuple[Tenant, Compiled]) -> None:
    t, c = tenant
    dp = c.dp(t.router)
    key = ipv4("10.0.1.10", "192.168.3.4", c.lrp(t.lab.ids["r1-web"]))
    chosen = {}
    for member in (1, 2):
        key[F("reg2")], key[F("reg3")] = 1, member
        acts = c.hit(dp, "lr_in_ip_routing_ecmp", key).actions
        chosen[set_value(acts, "reg0")] = set_value(acts, "outport")
    assert chosen == {
        ip("10.0.1.50"): c.lrp(t.lab.ids["r1-web"]).key,
        ip("10.0.2.50"): c.lrp(t.lab.ids["r1-db"]).key,
    }
    key[F("reg2")] = 0
    assert c.hit(dp, "lr_in_ip_routing_ecmp", key).actions == (A.Next(),)


def test_no_route_without_gateway(lab: Lab, alice: Api) -> None:
    t = Tenant(lab, alice).build()
    c = lab.compile()
    web = c.lrp(lab.ids["r1-web"])
    acts = c.hit(c.dp(t.router), "lr_in_ip_routing", ipv4("10.0.1.10", "8.8.8.8", web)).actions
    (error,) = acts
    assert isinstance(error, A.EmitIcmpError)
    assert (error.icmp_type, error.icmp_code) == (3, 0)
    assert A.SetField("ip4.src", ip("10.0.1.1")) in error.then
    assert error.then[-3:] == (
        A.Move("outport", "inport"),
        A.SetField("flags", FLAG_LOOPBACK, FLAG_LOOPBACK),
        A.Output(),
    )


def test_icmp_echo_reply_is_routed_back(tenant: tuple[Tenant, Compiled]) -> None:
    t, c = tenant
    dp, web = c.dp(t.router), c.lrp(t.lab.ids["r1-web"])
    for target in ("10.0.1.1", "10.0.2.1", "203.0.113.2"):  # every router address answers
        echo = ipv4("10.0.1.10", target, web, ttl=1, proto=1)
        echo[F("icmp.type")] = 8
        acts = c.hit(dp, "lr_in_ip_input", echo).actions
        assert acts[:3] == (
            A.Exchange("ip4.dst", "ip4.src"),
            A.SetField("ip.ttl", 255),
            A.SetField("icmp.type", 0),
        )
        assert isinstance(acts[-1], A.Next)
        assert acts[-1].table == l3.ROUTING_TABLE


def test_route_priorities_leave_room_below_and_above() -> None:
    """No route < default route < … < host routes < the after-NAT drop of router IPs."""
    assert l3.static_priority(0) > l3.PRIO_NO_ROUTE
    assert l3.static_priority(32) < l3.connected_priority(32) < l3.static_priority(33)
    assert l3.connected_priority(128) < l3.PRIO_OWN_IP_AFTER_NAT


def test_traffic_to_router_not_answered_is_dropped(tenant: tuple[Tenant, Compiled]) -> None:
    t, c = tenant
    dp, web = c.dp(t.router), c.lrp(t.lab.ids["r1-web"])
    tcp = c.hit(dp, "lr_in_ip_input", ipv4("10.0.1.10", "10.0.2.1", web)).actions
    assert tcp == (A.Drop(DropReason.EXPLICIT_DROP),)
    udp = c.hit(dp, "lr_in_ip_input", ipv4("10.0.1.10", "10.0.2.1", web, proto=17)).actions
    assert isinstance(udp[0], A.EmitIcmpError)
    assert (udp[0].icmp_type, udp[0].icmp_code) == (3, 3)
    # the SNAT address is left to lr_in_unsnat, then dropped after NAT if nothing matched
    to_gw = ipv4("198.51.100.7", "203.0.113.2", c.lrp(t.lab.ids["r1-gw"]))
    assert c.hit(dp, "lr_in_ip_input", to_gw).actions == (A.Next(),)
    after_nat = c.hit(dp, "lr_in_ip_routing", to_gw)
    assert after_nat.priority == l3.PRIO_OWN_IP_AFTER_NAT
    assert isinstance(after_nat.actions[0], A.Drop)


def test_ttl_expiry_answers_from_the_inport(tenant: tuple[Tenant, Compiled]) -> None:
    t, c = tenant
    dp, db = c.dp(t.router), c.lrp(t.lab.ids["r1-db"])
    (error,) = c.hit(dp, "lr_in_ip_input", ipv4("10.0.2.20", "10.0.1.10", db, ttl=1)).actions
    assert isinstance(error, A.EmitIcmpError)
    assert (error.icmp_type, error.icmp_code) == (11, 0)
    assert error.then[:3] == (
        A.Exchange("eth.dst", "eth.src"),
        A.Move("ip4.dst", "ip4.src"),
        A.SetField("ip4.src", ip("10.0.2.1")),
    )
    expired_error = ipv4("10.0.2.20", "10.0.1.10", db, ttl=0, proto=1)
    expired_error[F("icmp.type")] = 11
    assert c.hit(dp, "lr_in_ip_input", expired_error).actions == (A.Drop(DropReason.TTL_EXPIRED),)
    alive = ipv4("10.0.2.20", "10.0.1.10", db, ttl=2)
    assert c.hit(dp, "lr_in_ip_input", alive).actions == (A.Next(),)


MARTIANS = [
    ("127.0.0.1", "10.0.2.20"),
    ("0.1.2.3", "10.0.2.20"),
    ("224.0.0.5", "10.0.2.20"),
    ("10.0.1.1", "10.0.2.20"),  # the router's own address as a source
    ("10.0.1.10", "10.0.2.255"),  # directed broadcast
    ("10.0.1.10", "239.1.1.1"),
    ("10.0.1.10", "127.0.0.1"),
]


def test_martians_and_broadcasts_are_dropped(tenant: tuple[Tenant, Compiled]) -> None:
    t, c = tenant
    dp, web = c.dp(t.router), c.lrp(t.lab.ids["r1-web"])
    for src, dst in MARTIANS:
        (drop,) = c.hit(dp, "lr_in_ip_input", ipv4(src, dst, web)).actions
        assert isinstance(drop, A.Drop), (src, dst)


def test_arp_for_router_address(tenant: tuple[Tenant, Compiled]) -> None:
    t, c = tenant
    dp, web = c.dp(t.router), c.lrp(t.lab.ids["r1-web"])
    reply = c.hit(dp, "lr_in_ip_input", arp_request("10.0.1.10", "10.0.1.1", web)).actions
    assert A.SetField("arp.op", 2) in reply
    assert A.SetField("arp.sha", web.mac) in reply
    assert A.SetField("arp.spa", ip("10.0.1.1")) in reply
    assert reply[-1] == A.Output()
    learn = c.hit(dp, "lr_in_lookup_neighbor", arp_request("10.0.1.10", "10.0.1.1", web))
    assert learn.actions == (A.PutMacBinding(), A.Next())
    # not for the router, or from off the port's subnet: learned nothing, dropped
    for spa, tpa in (("10.0.1.10", "10.0.1.11"), ("10.9.9.9", "10.0.1.1")):
        key = arp_request(spa, tpa, web)
        assert c.hit(dp, "lr_in_ip_input", key).actions == (A.Drop(DropReason.EXPLICIT_DROP),)
        assert c.hit(dp, "lr_in_lookup_neighbor", key).priority == 0


def test_arp_resolve_known_and_unknown_next_hops(tenant: tuple[Tenant, Compiled]) -> None:
    t, c = tenant
    dp, db = c.dp(t.router), c.lrp(t.lab.ids["r1-db"])
    key = ipv4("10.0.1.10", "10.0.2.20", c.lrp(t.lab.ids["r1-web"]))
    key[F("outport")], key[F("reg0")] = db.key, ip("10.0.2.20")
    known = c.hit(dp, "lr_in_arp_resolve", key).actions
    assert known == (
        A.SetField("eth.dst", c.port(t.lab.ids["vm2"]).mac),
        A.SetField("reg7", 1),
        A.Next(),
    )
    key[F("reg0")] = ip("10.0.2.77")
    assert c.hit(dp, "lr_in_arp_resolve", key).actions == (A.LookupMacBinding(), A.Next())
    key[F("reg7")] = 0
    (request,) = c.hit(dp, "lr_in_arp_request", key).actions
    assert request == A.EmitArpRequest(then=(A.Output(),))
    key[F("reg7")] = 1
    assert c.hit(dp, "lr_in_arp_request", key).actions == (A.Output(),)


def test_ipv6_neighbor_discovery(tenant: tuple[Tenant, Compiled]) -> None:
    t, c = tenant
    dp, v6 = c.dp(t.router), c.lrp(t.lab.ids["r1-v6"])
    ns = packet(
        eth_type=0x86DD,
        eth_dst=0x3333FF000001,
        ip6_src=ip("2001:db8:1::10"),
        ip6_dst=ip("ff02::1:ff00:1"),
        ip_proto=58,
        ip_ttl=255,
        icmp_type=135,
        nd_target=ip("2001:db8:1::1"),
        inport=v6.key,
    )
    assert c.hit(dp, "lr_in_admission", ns).actions == (A.Next(),)
    (advert,) = c.hit(dp, "lr_in_ip_input", ns).actions
    assert advert == A.NdAdvert(ip("2001:db8:1::1"), v6.mac, True, l3.BACK_OUT_INPORT)
    key = ipv6("2001:db8:1::10", "2001:db8:1::20", v6)
    key[F("outport")], key[F("reg7")] = v6.key, 0
    acts = c.hit(dp, "lr_in_arp_request", key).actions
    link_local = ipaddress.IPv6Address("fe80::f816:3eff:fe00:" + f"{v6.mac & 0xFFFF:x}")
    assert acts == (A.SetField("ip6.src", int(link_local)), A.EmitArpRequest(then=(A.Output(),)))


def test_admin_down_router_has_only_defaults(lab: Lab, alice: Api) -> None:
    t = Tenant(lab, alice).build(admin_state_up=False)
    c = lab.compile()
    flows = c.flows(c.dp(t.router))
    assert {f.priority for f in flows} == {0}
    (admission,) = [f for f in flows if f.stage.name == "lr_in_admission"]
    assert isinstance(admission.actions[0], A.Drop)


def test_router_never_outputs_to_another_projects_network(lab: Lab, alice: Api, bob: Api) -> None:
    """Overlapping tenants: each router reaches only its own networks and the external one."""
    ext, _ = lab.external()
    a = Tenant(lab, alice).build(ext)
    lab.network(bob, "bob-net", "10.0.1.0/24")  # same CIDR as alice's web
    lab.router(bob, "r2", ext)
    lab.interface(bob, "r2", "bob-net")
    lab.port(bob, lab.ids["bob-net"], "bob-vm", "10.0.1.10")
    c = lab.compile()
    for router_id in (a.router, lab.ids["r2"]):
        dp = c.dp(router_id)
        project = c.sb.datapaths[dp].project_id
        own = {pb.key: pb for pb in c.sb.ports.values() if pb.datapath == dp}
        reachable = set()
        for pb in own.values():
            peer_dp = c.sb.datapaths[c.sb.ports[pb.peer or ""].datapath]
            network = c.nb.by_id("networks")[peer_dp.name]
            assert peer_dp.project_id == project or network["router:external"]
            reachable.add(peer_dp.key)
        macs = {pb.mac for pb in c.sb.ports.values() if pb.datapath in reachable}
        for flow in c.flows(dp):
            for act in _walk(flow.actions):
                if isinstance(act, A.SetField) and act.field == "outport":
                    assert act.value in own, flow
                if isinstance(act, A.SetField) and act.field == "eth.dst":
                    assert act.value in macs, flow


def _walk(actions: Iterable[object]) -> Iterable[object]:
    for act in actions:
        yield act
        yield from _walk(getattr(act, "then", ()))


# ---------------------------------------------------------------- LPM property


def _binding(name: str, key: int, cidrs: tuple[str, ...]) -> PortBinding:
    return PortBinding(name, key, 1 << 24, "patch", 0xFA163E000000 + key, cidrs, f"p-{name}")


def _view(connected: list[str], routes: list[tuple[str, str]]) -> l3.RouterView:
    ports = []
    for index, cidr in enumerate(connected, start=1):
        net = ipaddress.ip_network(cidr)
        iface = f"{net.network_address + 1}/{net.prefixlen}"
        ports.append(l3._router_port(_binding(f"lrp-{index}", index, (iface,)), {}))
    router = {
        "id": "r",
        "routes": [{"destination": d, "nexthop": h} for d, h in routes],
        "admin_state_up": True,
    }
    return l3.RouterView(router, 1 << 24, tuple(ports))


_prefixes = st.tuples(st.integers(0, 2**32 - 1), st.integers(8, 30)).map(
    lambda t: ipaddress.ip_network((t[0], t[1]), strict=False)
)


@st.composite
def _tables(draw: st.DrawFn) -> tuple[list[str], list[tuple[str, str]], int]:
    connected: list[ipaddress.IPv4Network] = []
    for net in draw(st.lists(_prefixes, min_size=1, max_size=4)):
        if net.prefixlen <= 30 and not any(net.overlaps(o) for o in connected):
            connected.append(net)
    hosts = [str(n.network_address + 2) for n in connected]
    dests = draw(st.lists(st.tuples(_prefixes, st.sampled_from(hosts)), max_size=4))
    routes = [(str(d), h) for d, h in dests]
    return [str(n) for n in connected], routes, draw(st.integers(0, 2**32 - 1))


@settings(max_examples=60, deadline=None)
@given(_tables())
def test_routing_priorities_implement_longest_prefix_match(
    table: tuple[list[str], list[tuple[str, str]], int],
) -> None:
    connected, routes, dst = table
    view = _view(connected, routes)
    sink = FlowSink()
    out = l3.Emitter(sink, view)
    l3._connected(out)
    l3._static(out, NBSnapshot())
    key = packet(eth_type=0x800, ip4_dst=dst, ip_ttl=64)
    hits = [f for f in sink.flows if evaluate(f.match, key)]
    candidates = [(ipaddress.ip_network(c), True) for c in connected]
    candidates += [(ipaddress.ip_network(d), False) for d, _ in routes]
    address = ipaddress.IPv4Address(dst)
    matching = [(n.prefixlen, is_conn) for n, is_conn in candidates if address in n]
    if not matching:
        assert hits == []
        return
    best = max(matching)
    top = max(hits, key=lambda f: f.priority)
    assert [f.priority for f in hits].count(top.priority) == 1
    if best[1]:
        assert "connected" in top.provenance.note
        assert ipaddress.ip_network(top.provenance.note.split()[-1]).prefixlen == best[0]
    else:
        assert top.priority == l3.static_priority(best[0])
