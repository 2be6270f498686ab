"""The kernel alone: the practical limit on this machine.

Every topology lives in namespaces made here (``nvb-k*``); the "switch" or
"router" is a namespace of its own holding Linux bridges, so nothing is
created in the machine's own namespace.

* ``kernel-veth`` / ``l2``: client and server joined by one veth pair;
* ``kernel`` / ``l2``: both on a Linux bridge;
* ``kernel`` / ``l3``: two bridges and IP forwarding in the router namespace;
* ``kernel`` / ``sg``: the same plus nftables: a stateful forward filter
  (new connections only from the client's subnet, established/related back)
  and masquerade (SNAT) toward the server's "external" subnet;
* ``kernel`` / ``xhost``: two host namespaces, a bridge each, joined by a
  kernel VXLAN tunnel over a veth underlay (this kernel has no Geneve).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from nvb import results
from nvb.system import Machine, in_netns, run
from nvb.workloads import Node, Target, components_of

NFT_SG = """
table ip nvb {
  chain nvbfwd {
    type filter hook forward priority 0; policy drop;
    ct state established,related accept
    iifname "nvbbr1" ct state new accept
  }
  chain nvbpost {
    type nat hook postrouting priority 100;
    ip saddr 10.251.1.0/24 oifname "nvbbr3" masquerade
  }
}
"""


def _node(ns: str) -> Node:
    return Node(ns, ["ip", "netns", "exec", ns])


def _vm(m: Machine, ns: str, switch_ns: str, dev: str, cidr: str, gw: str | None) -> None:
    m.netns(ns)
    m.veth("eth0", ns, dev, switch_ns)
    run(["ip", "-n", ns, "addr", "add", cidr, "dev", "eth0"])
    if gw:
        run(["ip", "-n", ns, "route", "add", "default", "via", gw])


def _bridge(m: Machine, ns: str, name: str, ports: list[str], addr: str | None = None) -> None:
    run(["ip", "-n", ns, "link", "add", name, "type", "bridge"])
    for port in ports:
        run(["ip", "-n", ns, "link", "set", port, "master", name])
    if addr:
        run(["ip", "-n", ns, "addr", "add", addr, "dev", name])
    run(["ip", "-n", ns, "link", "set", name, "up"])


def _target(backend: str, topology: str, client: str, server: str, ip: str, note: str) -> Target:
    return Target(backend, topology, _node(client), _node(server), ip, components_of({}), note=note)


@contextmanager
def setup(m: Machine, backend: str, topology: str) -> Iterator[Target]:
    """Build one kernel topology, yield its target, tear it down."""
    scope = m.scope()
    try:
        yield _build(scope, backend, topology)
    finally:
        scope.close()


def _build(m: Machine, backend: str, topology: str) -> Target:
    if backend == results.KERNEL_VETH:
        m.netns("nvb-kvc")
        m.netns("nvb-kvs")
        m.veth("eth0", "nvb-kvc", "eth1", "nvb-kvs")
        run(["ip", "-n", "nvb-kvc", "addr", "add", "10.251.0.1/24", "dev", "eth0"])
        run(["ip", "-n", "nvb-kvs", "addr", "add", "10.251.0.2/24", "dev", "eth1"])
        return _target(backend, topology, "nvb-kvc", "nvb-kvs", "10.251.0.2", "veth pair")
    if topology == "xhost":
        return _xhost(m, backend)
    sw = m.netns("nvb-ksw")
    run(in_netns(sw, ["sysctl", "-qw", "net.ipv4.ip_forward=1"]))
    if topology == "l2":
        _vm(m, "nvb-kc", sw, "nvbc", "10.251.1.11/24", None)
        _vm(m, "nvb-ks", sw, "nvbs", "10.251.1.12/24", None)
        _bridge(m, sw, "nvbbr1", ["nvbc", "nvbs"])
        return _target(backend, topology, "nvb-kc", "nvb-ks", "10.251.1.12", "Linux bridge")
    _vm(m, "nvb-kc", sw, "nvbc", "10.251.1.11/24", "10.251.1.1")
    _bridge(m, sw, "nvbbr1", ["nvbc"], "10.251.1.1/24")
    if topology == "l3":
        _vm(m, "nvb-ks", sw, "nvbs", "10.251.2.12/24", "10.251.2.1")
        _bridge(m, sw, "nvbbr2", ["nvbs"], "10.251.2.1/24")
        return _target(
            backend, topology, "nvb-kc", "nvb-ks", "10.251.2.12", "2 bridges + forwarding"
        )
    # sg: the server sits on the "external" subnet and has no route back to the client's
    _vm(m, "nvb-ks", sw, "nvbs", "10.251.100.12/24", None)
    _bridge(m, sw, "nvbbr3", ["nvbs"], "10.251.100.1/24")
    run(in_netns(sw, ["nft", "-f", "-"]), input_text=NFT_SG)
    return _target(
        backend,
        topology,
        "nvb-kc",
        "nvb-ks",
        "10.251.100.12",
        "bridges + forwarding + nftables stateful filter + masquerade",
    )


def _xhost(m: Machine, backend: str) -> Target:
    hosts = ("nvb-kh1", "nvb-kh2")
    for h in hosts:
        m.netns(h)
    m.veth("nvbul", hosts[0], "nvbul", hosts[1], mtu=65535)
    for i, h in enumerate(hosts):
        me, peer = f"10.251.200.{i + 1}", f"10.251.200.{2 - i}"
        run(["ip", "-n", h, "addr", "add", f"{me}/24", "dev", "nvbul"])
        run(
            [
                "ip",
                "-n",
                h,
                "link",
                "add",
                "nvbvx",
                "type",
                "vxlan",
                "id",
                "42",
                "local",
                me,
                "remote",
                peer,
                "dstport",
                "4789",
            ]
        )
        run(["ip", "-n", h, "link", "set", "nvbvx", "mtu", "1500", "up"])
    _vm(m, "nvb-kc", hosts[0], "nvbc", "10.251.1.11/24", None)
    _vm(m, "nvb-ks", hosts[1], "nvbs", "10.251.1.12/24", None)
    _bridge(m, hosts[0], "nvbbr1", ["nvbc", "nvbvx"])
    _bridge(m, hosts[1], "nvbbr1", ["nvbs", "nvbvx"])
    return _target(
        backend,
        "xhost",
        "nvb-kc",
        "nvb-ks",
        "10.251.1.12",
        "2 host namespaces, bridge + kernel VXLAN over a 65535-MTU veth underlay",
    )
