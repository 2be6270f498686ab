"""One realistic cloud, made through the real API, compiled and run by the reference pipeline.

The acceptance tests of issue 3 send Scapy-built frames into logical ports and
compare what comes out byte for byte with frames Scapy builds. Building the
NB state through the API (projects, tokens, networks, routers, floating IPs,
load balancers, security groups) and compiling it takes a few seconds, so the
world is built once per session in its own database; every test gets a fresh
:class:`Net`: a pipeline over the shared classifier with its own conntrack
(one conntrack for all packets of a test, so replies find their connections)
and its own copy of the learned MAC bindings.

The cloud::

    admin  ext 203.0.113.0/24 (router:external), "outside" 203.0.113.50 (no port
           security: it plays the Internet)
    alice  web 10.0.0.0/24 (DNS 192.0.2.53): vm1 .10 [default, ssh] with a floating IP,
           vm2 .11 [default], www .12 [web], m1 .21 / m2 .22 [default] members of the
           load balancer lb (VIP .100, TCP 80 -> 8080, ROUND_ROBIN)
           db 10.0.1.0/24: vm3 .20 [default], no floating IP (masqueraded)
           r1: interfaces on web and db, gateway on ext (SNAT on)
    bob    bnet 10.0.0.0/24: bob-vm .10 (same address as alice's vm1), r2 with a gateway
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from conftest import Api
from netvirt.api.app import create_app
from netvirt.compiler import nb as nb_module
from netvirt.compiler.compile import compile_nb
from netvirt.compiler.nb import NBSnapshot
from netvirt.compiler.translate import all_rules, topology
from netvirt.dataplane.classifier import Classifier
from netvirt.dataplane.drops import DropReason
from netvirt.dataplane.nf import Conntrack, FlowKeyConntrack
from netvirt.dataplane.pipeline import Pipeline, Verdict
from netvirt.northbound import identity
from netvirt.northbound.context import Context
from netvirt.northbound.db import Database
from netvirt.southbound.model import PortBinding, SBState
from netvirt.state.memory import MemoryStore

Obj = dict[str, Any]
EXT_CIDR = "203.0.113.0/24"
OUTSIDE_IP = "203.0.113.50"
DNS_SERVER = "192.0.2.53"
VIP = "10.0.0.100"
LB_PORT, MEMBER_PORT = 80, 8080
BROADCAST = "ff:ff:ff:ff:ff:ff"


def mac_str(value: int) -> str:
    raw = f"{value:012x}"
    return ":".join(raw[i : i + 2] for i in range(0, 12, 2))


# ---------------------------------------------------------------- building through the API


@dataclass
class Builder:
    """Creates the NB objects and remembers readable names for their ids."""

    admin: Api
    alice: Api
    bob: Api
    ids: dict[str, str] = field(default_factory=dict)

    def network(self, api: Api, name: str, cidr: str, **attrs: Any) -> None:
        subnet_attrs = attrs.pop("subnet", {})
        net = api.ok("POST", "/v2.0/networks", {"network": {"name": name, **attrs}})["network"]
        body = {"network_id": net["id"], "cidr": cidr, "name": f"{name}-sub", **subnet_attrs}
        sub = api.ok("POST", "/v2.0/subnets", {"subnet": body})["subnet"]
        self.ids[name], self.ids[f"{name}-sub"] = net["id"], sub["id"]

    def group(self, api: Api, name: str, port: int) -> str:
        """A security group (egress open, as Neutron creates it) admitting TCP ``port``."""
        body = {"security_group": {"name": name}}
        group = api.ok("POST", "/v2.0/security-groups", body)["security_group"]["id"]
        rule = {
            "security_group_id": group,
            "direction": "ingress",
            "protocol": "tcp",
            "port_range_min": port,
            "port_range_max": port,
        }
        api.ok("POST", "/v2.0/security-group-rules", {"security_group_rule": rule})
        self.ids[f"sg-{name}"] = group
        return str(group)

    def default_group(self, api: Api) -> str:
        _, found = api.get("/v2.0/security-groups", name="default")
        return str(found["security_groups"][0]["id"])

    def port(self, api: Api, net: str, name: str, ip: str, **attrs: Any) -> None:
        body = {"network_id": self.ids[net], "name": name, "fixed_ips": [{"ip_address": ip}]}
        port = api.ok("POST", "/v2.0/ports", {"port": body | attrs})["port"]
        self.ids[name] = port["id"]

    def router(self, api: Api, name: str, nets: list[str]) -> None:
        body = {"name": name, "external_gateway_info": {"network_id": self.ids["ext"]}}
        router = api.ok("POST", "/v2.0/routers", {"router": body})["router"]
        self.ids[name] = router["id"]
        for net in nets:
            body = {"subnet_id": self.ids[f"{net}-sub"]}
            path = f"/v2.0/routers/{router['id']}/add_router_interface"
            self.ids[f"{name}-{net}"] = api.ok("PUT", path, body)["port_id"]
        _, found = self.admin.get("/v2.0/ports", device_id=router["id"])
        for port in found["ports"]:
            if port["device_owner"] == "network:router_gateway":
                self.ids[f"{name}-gw"] = port["id"]

    def load_balancer(self, api: Api) -> None:
        body = {"loadbalancer": {"vip_subnet_id": self.ids["web-sub"], "vip_address": VIP}}
        lb = api.ok("POST", "/v2/lbaas/loadbalancers", body)["loadbalancer"]
        self.ids["vip"] = lb["vip_port_id"]
        listener = {"loadbalancer_id": lb["id"], "protocol": "TCP", "protocol_port": LB_PORT}
        lid = api.ok("POST", "/v2/lbaas/listeners", {"listener": listener})["listener"]["id"]
        pool = {"protocol": "TCP", "lb_algorithm": "ROUND_ROBIN", "listener_id": lid}
        pid = api.ok("POST", "/v2/lbaas/pools", {"pool": pool})["pool"]["id"]
        for member in ("10.0.0.21", "10.0.0.22"):
            body = {"member": {"address": member, "protocol_port": MEMBER_PORT}}
            api.ok("POST", f"/v2/lbaas/pools/{pid}/members", body)

    def floating_ip(self, api: Api, port: str) -> str:
        body = {"floatingip": {"floating_network_id": self.ids["ext"], "port_id": self.ids[port]}}
        return str(api.ok("POST", "/v2.0/floatingips", body)["floatingip"]["floating_ip_address"])


def build_cloud(b: Builder) -> str:
    """The cloud of the module docstring; returns vm1's floating IP."""
    open_port = {"port_security_enabled": False, "security_groups": []}
    b.network(b.admin, "ext", EXT_CIDR, **{"router:external": True})
    b.port(b.admin, "ext", "outside", OUTSIDE_IP, **open_port)
    b.network(b.alice, "web", "10.0.0.0/24", subnet={"dns_nameservers": [DNS_SERVER]})
    b.network(b.alice, "db", "10.0.1.0/24")
    default = b.default_group(b.alice)
    ssh, web = b.group(b.alice, "ssh", 22), b.group(b.alice, "web", 80)
    b.port(b.alice, "web", "vm1", "10.0.0.10", security_groups=[default, ssh])
    b.port(b.alice, "web", "vm2", "10.0.0.11")
    b.port(b.alice, "web", "www", "10.0.0.12", security_groups=[web])
    b.port(b.alice, "web", "m1", "10.0.0.21")
    b.port(b.alice, "web", "m2", "10.0.0.22")
    b.port(b.alice, "db", "vm3", "10.0.1.20")
    b.router(b.alice, "r1", ["web", "db"])
    b.load_balancer(b.alice)
    fip = b.floating_ip(b.alice, "vm1")
    b.network(b.bob, "bnet", "10.0.0.0/24")
    b.port(b.bob, "bnet", "bob-vm", "10.0.0.10")
    b.router(b.bob, "r2", ["bnet"])
    return fip


# ---------------------------------------------------------------- the compiled world


@dataclass
class World:
    """The compiled cloud: NB snapshot, SB state, classifier and readable names."""

    nb: NBSnapshot
    sb: SBState
    classifier: Classifier
    ids: dict[str, str]
    projects: dict[str, str]
    fip: str

    def nb_port(self, name: str) -> Obj:
        return next(p for p in self.nb.ports if p["id"] == self.ids[name])

    def binding(self, name: str) -> PortBinding:
        """The switch-side binding of a named port (the VIF, or a router's switch port)."""
        return self.sb.ports[self.ids[name]]

    def mac(self, name: str) -> str:
        return str(self.nb_port(name)["mac_address"])

    def ip(self, name: str) -> str:
        return str(self.nb_port(name)["fixed_ips"][0]["ip_address"])

    def names(self) -> dict[str, str]:
        """SB port name -> readable name."""
        return {v: k for k, v in self.ids.items()}

    def datapaths_of(self, project: str) -> set[int]:
        return {k for k, dp in self.sb.datapaths.items() if dp.project_id == self.projects[project]}

    def net(self) -> Net:
        conntrack = FlowKeyConntrack(Conntrack(MemoryStore()))
        return Net(self, Pipeline(self.classifier, topology(self.sb), conntrack))


@dataclass
class Net:
    """A pipeline over the world with its own conntrack and learned MAC bindings."""

    world: World
    pipeline: Pipeline
    now: float = 1.0

    def send(self, port: str, frame: Any, *, trace: bool = False) -> Verdict:
        """Process ``frame`` (Scapy packet or bytes) as entering the named port."""
        binding = self.world.binding(port)
        self.now += 0.01  # distinct timestamps: conntrack may associate calls by `now`
        return self.pipeline.process(
            bytes(frame), binding.datapath, binding.key, self.now, trace=trace
        )

    def delivered(self, verdict: Verdict) -> list[str]:
        names = self.world.names()
        return sorted(names.get(e.port_name, e.port_name) for e in verdict.outputs)

    def only(self, verdict: Verdict) -> tuple[str, bytes]:
        """The one output of a verdict: (readable port name, frame)."""
        assert len(verdict.outputs) == 1, (self.delivered(verdict), verdict.drops)
        out = verdict.outputs[0]
        return self.world.names().get(out.port_name, out.port_name), out.frame

    def dropped(self, verdict: Verdict) -> list[DropReason]:
        return list(verdict.drops)


def _project(db: Database, client: TestClient, name: str) -> Api:
    with db.write() as session:
        project = identity.create_project(session, Context.admin(), name)
        token = identity.create_token(session, Context.admin(), project["id"], "member")
    return Api(client, token["token"], project["id"])


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    path: Path = tmp_path_factory.mktemp("pipeline") / "nb.db"
    db = Database(f"sqlite:///{path}")
    try:
        with TestClient(create_app(db)) as client:
            with db.write() as session:
                token = identity.bootstrap(session)
            assert token is not None
            admin = Api(client, token["token"], identity.ADMIN_PROJECT)
            builder = Builder(admin, _project(db, client, "alice"), _project(db, client, "bob"))
            fip = build_cloud(builder)
            projects = {
                "admin": admin.project_id,
                "alice": builder.alice.project_id,
                "bob": builder.bob.project_id,
            }
        nb = nb_module.load(db)
        sb = compile_nb(nb)
        classifier = Classifier()
        for rule in all_rules(sb):
            classifier.add(rule)
        yield World(nb, sb, classifier, builder.ids, projects, fip)
    finally:
        db.dispose()


@pytest.fixture
def net(world: World) -> Net:
    return world.net()


def gateway_ip(world: World, router: str = "r1") -> str:
    """The router's gateway address on the external network (its SNAT address)."""
    fixed = world.nb_port(f"{router}-gw")["fixed_ips"]
    return next(
        str(f["ip_address"])
        for f in fixed
        if ipaddress.ip_address(f["ip_address"]) in ipaddress.ip_network(EXT_CIDR)
    )
