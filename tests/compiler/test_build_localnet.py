"""The external network's ``localnet`` port (topology.py): the upstream router's port is
plugged on every gateway chassis, so it is its own port type, never port-secured."""

from __future__ import annotations

import ipaddress

from compiler.conftest import NBBuilder, Obj
from netvirt.compiler.compile import compile_nb
from netvirt.compiler.expr.printer import format_match
from netvirt.compiler.topology import FLOOD
from netvirt.southbound.model import SBState

OWNER = "network:external_gateway"


def external(nbb: NBBuilder, *, router_external: bool = True) -> tuple[Obj, Obj, Obj]:
    """An external network 172.24.4.0/24 with its upstream port at .1 (port security on,
    which a localnet port must ignore), and a router whose gateway is .2."""
    net = nbb.network("public", 100, project="admin", **{"router:external": router_external})
    subnet = nbb.subnet(net, "public-v4", "172.24.4.0/24", enable_dhcp=False)
    upstream = nbb.port(net, "upstream", [(subnet, "172.24.4.1")], device_owner=OWNER)
    router = nbb.router("r1", external_gateway_info={"network_id": net["id"]})
    nbb.port(
        net,
        "r1-gw",
        [(subnet, "172.24.4.2")],
        device_owner="network:router_gateway",
        device_id=router["id"],
        port_security_enabled=False,
    )
    return net, upstream, router


def texts(sb: SBState, stage: str, datapath: int) -> list[str]:
    return [
        f"{f.priority} {format_match(f.match)}"
        for f in sb.flows
        if f.stage.name == stage and f.datapath == datapath
    ]


def test_the_upstream_port_of_an_external_network_is_localnet(nbb: NBBuilder) -> None:
    net, upstream, _ = external(nbb)
    sb = compile_nb(nbb.snapshot())
    binding = sb.ports[upstream["id"]]
    assert binding.type == "localnet"
    assert binding.ips == ("172.24.4.1/24",)
    # in the flood group: a broadcast from the cloud reaches the physical network
    assert upstream["id"] in sb.groups[(100, FLOOD)].ports
    # never port-secured, whatever port_security_enabled says: the outside world sends
    # from any address; its frames are admitted by inport alone
    port_sec = texts(sb, "ls_in_port_sec_l2", 100)
    assert f'50 inport == "{upstream["id"]}"' in port_sec
    assert not any("eth.src" in t and upstream["id"] in t for t in port_sec)
    assert not any(upstream["id"] in t for t in texts(sb, "ls_in_port_sec_ip", 100))
    assert net["id"] == sb.datapaths[100].name


def test_routers_resolve_the_upstream_statically_through_the_localnet_port(
    nbb: NBBuilder,
) -> None:
    _, upstream, router = external(nbb)
    sb = compile_nb(nbb.snapshot())
    dp = sb.datapath_by_name(router["id"]).key
    hop = int(ipaddress.ip_address("172.24.4.1"))
    resolved = [
        f
        for f in sb.flows
        if f.datapath == dp and f.stage.name == "lr_in_arp_resolve" and str(hop) in repr(f.match)
    ]
    assert resolved, "no static binding for the upstream gateway"
    mac = int(upstream["mac_address"].replace(":", ""), 16)
    assert any(mac in {getattr(a, "value", None) for a in f.actions} for f in resolved)
    # the switch answers nothing on the upstream's behalf when it asks for its own address
    own = texts(sb, "ls_in_arp_rsp", 100)
    assert any(t.startswith("100 ") and upstream["id"] in t for t in own)


def test_the_same_owner_on_a_tenant_network_stays_a_vif(nbb: NBBuilder) -> None:
    _, upstream, _ = external(nbb, router_external=False)
    sb = compile_nb(nbb.snapshot())
    assert sb.ports[upstream["id"]].type == "vif"
