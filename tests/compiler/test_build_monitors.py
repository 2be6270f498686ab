"""Service monitors: which members the hosts check, from where, and how."""

from __future__ import annotations

from typing import Any

from compiler.conftest import NBBuilder, make_id
from netvirt.compiler.compile import compile_nb
from netvirt.southbound.model import ServiceMonitor

Obj = dict[str, Any]


def healthmonitor(nbb: NBBuilder, pool: Obj, kind: str = "HTTP", **kw: Any) -> Obj:
    hm = {
        "id": make_id("healthmonitor", pool["name"]),
        "project_id": pool["project_id"],
        "type": kind,
        "delay": 5,
        "timeout": 3,
        "max_retries": 2,
        "max_retries_down": 4,
        "http_method": None,
        "url_path": None,
        "expected_codes": None,
        "admin_state_up": True,
        "pools": [{"id": pool["id"]}],
    } | kw
    nbb.nb.healthmonitors.append(hm)
    return hm


def mac(port: Obj) -> int:
    return int(port["mac_address"].replace(":", ""), 16)


def test_monitored_members_get_a_record(nbb: NBBuilder) -> None:
    net = nbb.network("web-net", 101)
    sub = nbb.subnet(net, "web-sub", "10.0.0.0/24")
    web1 = nbb.port(net, "web1", [(sub, "10.0.0.11")])
    lb = nbb.loadbalancer("lb1", net, sub, "10.0.0.100")
    vip_port = next(p for p in nbb.nb.ports if p["id"] == lb["vip_port_id"])
    pool = nbb.pool(nbb.listener(lb, "http", "HTTP", 80), "web-pool")
    hm = healthmonitor(nbb, pool, url_path="/health")
    member = nbb.member(pool, "10.0.0.11", 8080)
    sb = compile_nb(nbb.snapshot())
    assert sb.monitors == {
        member["id"]: ServiceMonitor(
            member_id=member["id"],
            pool_id=pool["id"],
            monitor_id=hm["id"],
            logical_port=web1["id"],
            member_mac=mac(web1),
            ip="10.0.0.11",
            port=8080,
            type="HTTP",
            delay=5,
            timeout=3,
            max_retries=2,
            max_retries_down=4,
            source_ip="10.0.0.100",
            source_mac=mac(vip_port),
            http_method="GET",
            url_path="/health",
            expected_codes="200",
        )
    }


def test_which_members_are_checked(nbb: NBBuilder) -> None:
    net = nbb.network("web-net", 101)
    sub = nbb.subnet(net, "web-sub", "10.0.0.0/24")
    other = nbb.network("backend-net", 202)
    other_sub = nbb.subnet(other, "backend-sub", "10.1.0.0/24")
    nbb.port(net, "web1", [(sub, "10.0.0.11")])
    web2 = nbb.port(net, "web2", [(sub, "10.0.0.12")])
    back = nbb.port(other, "back", [(other_sub, "10.1.0.20")])
    router = nbb.router("r1")
    nbb.router_interface(router, net, sub)
    lb = nbb.loadbalancer("lb1", net, sub, "10.0.0.100")
    pool = nbb.pool(nbb.listener(lb, "tcp", "TCP", 80), "pool")
    healthmonitor(nbb, pool, "TCP")
    alternate = nbb.member(pool, "10.0.0.11", 80, monitor_address="10.0.0.12", monitor_port=81)
    disabled = nbb.member(pool, "10.0.0.11", 82, admin_state_up=False)
    portless = nbb.member(pool, "10.0.0.50", 80)
    router_port = nbb.member(pool, "10.0.0.1", 80)
    backend = nbb.member(pool, "10.1.0.20", 80, subnet_id=other_sub["id"])
    no_subnet = nbb.member(pool, "10.1.0.20", 81)
    unmonitored = nbb.pool(nbb.listener(lb, "udp", "UDP", 53), "dns")
    nbb.member(unmonitored, "10.0.0.11", 53)
    monitors = compile_nb(nbb.snapshot()).monitors
    assert set(monitors) == {alternate["id"], backend["id"]}
    assert (monitors[alternate["id"]].ip, monitors[alternate["id"]].port) == ("10.0.0.12", 81)
    assert monitors[alternate["id"]].logical_port == web2["id"]
    assert monitors[backend["id"]].logical_port == back["id"]
    assert monitors[backend["id"]].http_method == ""
    for skipped in (disabled, portless, router_port, no_subnet):
        assert skipped["id"] not in monitors


def test_disabled_monitor_checks_nothing(nbb: NBBuilder) -> None:
    net = nbb.network("web-net", 101)
    sub = nbb.subnet(net, "web-sub", "10.0.0.0/24")
    nbb.port(net, "web1", [(sub, "10.0.0.11")])
    lb = nbb.loadbalancer("lb1", net, sub, "10.0.0.100")
    pool = nbb.pool(nbb.listener(lb, "http", "HTTP", 80), "web-pool")
    hm = healthmonitor(nbb, pool, "PING", admin_state_up=False)
    nbb.member(pool, "10.0.0.11", 80)
    assert compile_nb(nbb.snapshot()).monitors == {}
    hm["admin_state_up"] = True
    assert len(compile_nb(nbb.snapshot()).monitors) == 1


def test_ipv6_member_is_checked_from_an_ipv6_vip(nbb: NBBuilder) -> None:
    net = nbb.network("web-net", 101)
    sub6 = nbb.subnet(net, "web-sub6", "fd00::/64")
    web = nbb.port(net, "web1", [(sub6, "fd00::11")])
    lb = nbb.loadbalancer("lb6", net, sub6, "fd00::100")
    pool = nbb.pool(nbb.listener(lb, "tcp", "TCP", 80), "pool")
    healthmonitor(nbb, pool, "TCP")
    member = nbb.member(pool, "fd00::11", 80)
    record = compile_nb(nbb.snapshot()).monitors[member["id"]]
    assert (record.ip, record.source_ip, record.logical_port) == (
        "fd00::11",
        "fd00::100",
        web["id"],
    )
