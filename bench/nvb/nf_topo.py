"""Lab topologies of the stateless-NF benchmark (issue 6): pure data, no machine access.

Two shapes, each generated per state mode (``memory``, ``redis``,
``redis-cluster``; the lab's own ``state:`` values):

* ``sg``: as the side-by-side harness's ``sg`` (``nvlab.py``), with its own
  names and addresses: one gateway host holding the client VM, whose stateful
  security group admits ping, iperf3 and the connection-rate ports in; its
  router SNATs to the external network, where the external namespace is the
  server. Everything the datapath does per packet (ACL conntrack, SNAT) goes
  through the state store of the mode.
* ``failover``: a host without an uplink (``hv1``, both VMs) and two or three
  gateway hosts. ``nvsc`` reaches the external namespace through SNAT,
  ``nvss`` has a floating IP reached from it: killing a gateway moves flows
  to the others, which find the connections in the shared store. Only
  external state can do that, so this shape runs with Redis modes only.

Names start with ``nvs`` (labs, VMs), addresses are in 10.253.0.0/16: the
side-by-side harness uses 10.251/10.252 and the lab's defaults 10.254 and
172.24.4.0/24.
"""

from __future__ import annotations

from typing import Any

MODES = ("memory", "redis", "redis-cluster")
EXTERNAL_MODES = ("redis", "redis-cluster")
SHAPES = ("sg", "failover")
UNDERLAY = "10.253.254.0/24"
TENANT_CIDR = "10.253.1.0/24"
EXTERNAL_CIDR = "10.253.100.0/24"
SG_SERVER_IP = "10.253.100.12"  # the external namespace's address in the sg shape
CLIENT_VM = "nvsc"
SERVER_VM = "nvss"
IPERF_PORT = 5201
CONN_PORT = 5301
CONN_PORTS = 16
STREAM_PORTS = (5401, 5402)  # failover: out through SNAT, in to the floating IP


def lab_name(shape: str, mode: str) -> str:
    """``nvs`` + shape + mode letter; lab names are ``[a-z][a-z0-9]{0,7}`` (no dash)."""
    if shape not in SHAPES or mode not in MODES:
        raise ValueError(f"unknown shape/mode {shape}/{mode}")
    letter = {"memory": "m", "redis": "r", "redis-cluster": "c"}[mode]
    return f"nvs{'sg' if shape == 'sg' else 'fo'}{letter}"


def _vm(name: str, host: str, ip: str, group: str, **extra: Any) -> dict[str, Any]:
    vm = {"name": name, "host": host, "network": "n1", "ip": ip, "port_security": True}
    return vm | {"security_groups": [group]} | extra


def _project(rules: list[dict[str, Any]], group: str) -> dict[str, Any]:
    return {
        "name": "nvs",
        "networks": [{"name": "n1", "cidr": TENANT_CIDR, "mtu": 1500, "port_security": True}],
        "routers": [{"name": "r1", "networks": ["n1"], "gateway": True, "snat": True}],
        "security_groups": [{"name": group, "rules": rules}],
    }


def sg_doc(mode: str) -> dict[str, Any]:
    """One gateway host, the client VM behind a stateful group and SNAT, the server outside."""
    ports = f"{CONN_PORT}-{CONN_PORT + CONN_PORTS - 1}"
    rules: list[dict[str, Any]] = [
        {"protocol": "icmp"},
        {"protocol": "tcp", "port": IPERF_PORT},
        {"protocol": "udp", "port": IPERF_PORT},
        {"protocol": "tcp", "port": ports},
    ]
    return {
        "name": lab_name("sg", mode),
        "state": mode,
        "underlay": {"cidr": UNDERLAY, "mtu": 65535},
        "hosts": [{"name": "hv1", "gateway": True}],
        "external": {"name": "public", "cidr": EXTERNAL_CIDR, "gateway_ip": SG_SERVER_IP},
        "projects": [_project(rules, "bench")],
        "vms": [_vm(CLIENT_VM, "hv1", "10.253.1.11", "bench")],
    }


def failover_doc(mode: str, gateways: int = 2) -> dict[str, Any]:
    """``hv1`` with both VMs, ``gateways`` gateway hosts; external state only."""
    if mode not in EXTERNAL_MODES:
        raise ValueError(f"failover needs external state, not {mode!r}")
    if not 2 <= gateways <= 3:
        raise ValueError("failover runs with 2 or 3 gateways")
    hosts: list[dict[str, Any]] = [{"name": "hv1"}]
    hosts += [{"name": f"gw{i}", "gateway": True} for i in range(1, gateways + 1)]
    rules: list[dict[str, Any]] = [{"protocol": "icmp"}, {"protocol": "tcp"}]
    return {
        "name": lab_name("failover", mode),
        "state": mode,
        "underlay": {"cidr": UNDERLAY, "mtu": 65535},
        "hosts": hosts,
        "external": {"name": "public", "cidr": EXTERNAL_CIDR},
        "projects": [_project(rules, "open")],
        "vms": [
            _vm(CLIENT_VM, "hv1", "10.253.1.11", "open"),
            _vm(SERVER_VM, "hv1", "10.253.1.12", "open", floating_ip=True),
        ],
    }
