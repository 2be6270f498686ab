"""Router NAT flows (build/nat.py): floating IPs, gateway SNAT and their reverses."""

from __future__ import annotations

from typing import Any

import pytest

from compiler.golden import check_golden
from compiler.test_build_router import (
    Compiled,
    Lab,
    Tenant,
    arp_request,
    ip,
    ipv4,
    router_dump,
    set_value,
)
from conftest import Api
from netvirt.compiler.lflow import LogicalFlow
from netvirt.dataplane import actions as A  # noqa: N812
from netvirt.dataplane.drops import DropReason
from netvirt.dataplane.fields import F
from netvirt.northbound.db import Database

NAT_STAGES = (
    "lr_in_ip_input",
    "lr_in_unsnat",
    "lr_in_dnat",
    "lr_in_arp_resolve",
    "lr_out_undnat",
    "lr_out_snat",
)


@pytest.fixture
def lab(db: Database, admin: Api) -> Lab:
    return Lab(db, admin)


def floating_ip(api: Api, ext: str, port: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"floating_network_id": ext}
    if port is not None:
        body["port_id"] = port
    fip: dict[str, Any] = api.ok("POST", "/v2.0/floatingips", {"floatingip": body})["floatingip"]
    return fip


def nat_only(flow: LogicalFlow) -> bool:
    return flow.provenance.builder == "nat"


@pytest.fixture
def fip_lab(lab: Lab, alice: Api) -> tuple[Tenant, Compiled, dict[str, Any]]:
    """r1 with a gateway (SNAT on) and a floating IP on vm1; vm2 has none."""
    ext, _ = lab.external()
    tenant = Tenant(lab, alice).build(ext)
    fip = floating_ip(alice, ext, lab.ids["vm1"])
    floating_ip(alice, ext)  # allocated, not associated: no flows
    return tenant, lab.compile(), fip


def test_floating_ip_golden(fip_lab: tuple[Tenant, Compiled, dict[str, Any]]) -> None:
    tenant, compiled, _ = fip_lab
    text = router_dump(compiled, compiled.dp(tenant.router), NAT_STAGES, nat_only)
    check_golden("router_fip", text)


def test_gateway_snat_golden(lab: Lab, alice: Api) -> None:
    ext, _ = lab.external()
    tenant = Tenant(lab, alice).build(ext)
    compiled = lab.compile()
    text = router_dump(compiled, compiled.dp(tenant.router), NAT_STAGES, nat_only)
    check_golden("router_snat", text)


def test_inbound_to_floating_ip_is_dnatted(
    fip_lab: tuple[Tenant, Compiled, dict[str, Any]],
) -> None:
    t, c, fip = fip_lab
    dp, gw = c.dp(t.router), c.lrp(t.lab.ids["r1-gw"])
    key = ipv4("198.51.100.7", fip["floating_ip_address"], gw)
    assert c.hit(dp, "lr_in_ip_input", key).actions == (A.Next(),)
    assert c.hit(dp, "lr_in_unsnat", key).actions == (A.CtSnat(),)
    assert c.hit(dp, "lr_in_dnat", key).actions == (A.CtDnat(ip("10.0.1.10")),)
    # after DNAT the packet is routed to vm1's subnet
    key[F("ip4.dst")] = ip("10.0.1.10")
    routed = c.hit(dp, "lr_in_ip_routing", key).actions
    assert set_value(routed, "outport") == c.lrp(t.lab.ids["r1-web"]).key


def test_outbound_snat_prefers_the_floating_ip(
    fip_lab: tuple[Tenant, Compiled, dict[str, Any]],
) -> None:
    t, c, fip = fip_lab
    dp, gw = c.dp(t.router), c.lrp(t.lab.ids["r1-gw"])
    web = c.lrp(t.lab.ids["r1-web"])
    key = ipv4("10.0.1.10", "198.51.100.7", web)
    key[F("outport")] = gw.key
    assert c.hit(dp, "lr_out_undnat", key).actions == (A.CtDnat(),)
    assert c.hit(dp, "lr_out_snat", key).actions == (A.CtSnat(ip(fip["floating_ip_address"])),)
    key[F("ip4.src")] = ip("10.0.2.20")  # vm2 has no floating IP: masquerade
    assert c.hit(dp, "lr_out_undnat", key).priority == 0
    assert c.hit(dp, "lr_out_snat", key).actions == (
        A.CtSnat(ip("203.0.113.2"), port_range=(1024, 65535)),
    )
    key[F("outport")] = c.lrp(t.lab.ids["r1-web"]).key  # east-west: no SNAT
    assert c.hit(dp, "lr_out_snat", key).actions == (A.Next(),)


def test_replies_to_the_gateway_address_are_unsnatted(
    fip_lab: tuple[Tenant, Compiled, dict[str, Any]],
) -> None:
    t, c, _ = fip_lab
    dp, gw = c.dp(t.router), c.lrp(t.lab.ids["r1-gw"])
    reply = ipv4("198.51.100.7", "203.0.113.2", gw)
    assert c.hit(dp, "lr_in_ip_input", reply).actions == (A.Next(),)  # not dropped early
    assert c.hit(dp, "lr_in_unsnat", reply).actions == (A.CtSnat(),)
    # from inside, the gateway address is just a router address
    inside = ipv4("10.0.1.10", "203.0.113.2", c.lrp(t.lab.ids["r1-web"]))
    assert c.hit(dp, "lr_in_unsnat", inside).priority == 0


def test_arp_for_floating_ip_on_gateway_only(
    fip_lab: tuple[Tenant, Compiled, dict[str, Any]],
) -> None:
    t, c, fip = fip_lab
    dp, gw = c.dp(t.router), c.lrp(t.lab.ids["r1-gw"])
    address = fip["floating_ip_address"]
    reply = c.hit(dp, "lr_in_ip_input", arp_request("203.0.113.1", address, gw))
    assert reply.provenance.nb_kind == "floatingip"
    assert A.SetField("arp.sha", gw.mac) in reply.actions
    assert A.SetField("arp.spa", ip(address)) in reply.actions
    web = c.lrp(t.lab.ids["r1-web"])
    inside = c.hit(dp, "lr_in_ip_input", arp_request("10.0.1.10", address, web))
    assert inside.actions == (A.Drop(DropReason.EXPLICIT_DROP),)


def test_hairpin_to_floating_ip_is_dnatted(
    fip_lab: tuple[Tenant, Compiled, dict[str, Any]],
) -> None:
    t, c, fip = fip_lab
    dp, db = c.dp(t.router), c.lrp(t.lab.ids["r1-db"])
    key = ipv4("10.0.2.20", fip["floating_ip_address"], db)
    assert c.hit(dp, "lr_in_dnat", key).actions == (A.CtDnat(ip("10.0.1.10")),)
    key[F("ip4.src")], key[F("outport")] = ip("10.0.1.10"), db.key  # vm1's reply
    assert c.hit(dp, "lr_out_undnat", key).actions == (A.CtDnat(),)


def test_snat_disabled_leaves_only_floating_ips(lab: Lab, alice: Api) -> None:
    ext, _ = lab.external()
    t = Tenant(lab, alice).build(ext, gw={"enable_snat": False})
    floating_ip(alice, ext, lab.ids["vm1"])
    c = lab.compile()
    dp, gw = c.dp(t.router), c.lrp(lab.ids["r1-gw"])
    snat = [a for f in c.flows(dp, "lr_out_snat") for a in f.actions if isinstance(a, A.CtSnat)]
    assert [a.port_range for a in snat] == [None]  # the floating IP's, no masquerade
    to_gw = ipv4("198.51.100.7", "203.0.113.2", gw)
    assert c.hit(dp, "lr_in_ip_input", to_gw).actions == (A.Drop(DropReason.EXPLICIT_DROP),)


def test_no_gateway_no_nat(lab: Lab, alice: Api) -> None:
    t = Tenant(lab, alice).build()
    c = lab.compile()
    assert [f for f in c.flows(c.dp(t.router)) if nat_only(f)] == []


def test_floating_ips_across_tenants(lab: Lab, alice: Api, bob: Api) -> None:
    """alice reaches bob's VM only through bob's floating IP, via bob's gateway MAC."""
    ext, _ = lab.external()
    t = Tenant(lab, alice).build(ext)
    lab.network(bob, "bob-net", "10.0.1.0/24")  # overlaps alice's web
    lab.router(bob, "r2", ext)
    lab.interface(bob, "r2", "bob-net")
    lab.port(bob, lab.ids["bob-net"], "bob-vm", "10.0.1.10")
    bob_fip = floating_ip(bob, ext, lab.ids["bob-vm"])["floating_ip_address"]
    c = lab.compile()
    dp1, dp2 = c.dp(t.router), c.dp(lab.ids["r2"])
    gw1, gw2 = c.lrp(lab.ids["r1-gw"]), c.lrp(lab.ids["r2-gw"])
    web = c.lrp(lab.ids["r1-web"])
    out = ipv4("10.0.1.10", bob_fip, web)
    routed = c.hit(dp1, "lr_in_ip_routing", out).actions
    assert set_value(routed, "outport") == gw1.key
    out[F("outport")], out[F("reg0")] = gw1.key, ip(bob_fip)
    resolved = c.hit(dp1, "lr_in_arp_resolve", out).actions
    assert resolved == (A.SetField("eth.dst", gw2.mac), A.SetField("reg7", 1), A.Next())
    # in bob's router, masqueraded alice traffic is DNATed to bob's VM
    inbound = ipv4("203.0.113.2", bob_fip, gw2)
    assert c.hit(dp2, "lr_in_dnat", inbound).actions == (A.CtDnat(ip("10.0.1.10")),)
    # alice's router never translates to bob's addresses
    for flow in c.flows(dp1):
        for act in flow.actions:
            if isinstance(act, A.CtDnat | A.CtSnat) and act.ip is not None:
                assert act.ip != ip(bob_fip)
