"""The lab's machinery on this Linux machine: namespaces, veths, processes.

Layout (``P`` = ``nvl-<lab>-``; every device lives inside a lab namespace,
none in the machine's own)::

    P ul      underlay: bridge br0, one port hv-<host> per host (MTU 65535)
    P <host>  a host: ul0 (underlay IP), vm-<vm> per VM, ext-gw on each gateway
    P <vm>    a VM: eth0 (the NB port's MAC, the network's MTU), lo
    P ext     the "Internet": gw-<host> per gateway host (the peer of its ext-gw),
              each holding the external subnet's gateway IP, and an ECMP route
              for the external subnet over the links of the active gateways

The host end of a VM's veth is up without an address: the host's agent
reads and writes it with AF_PACKET. IPv6 is off on host namespaces so their
kernels stay silent on VM links (no router solicitations or MLD into VMs).

Everything goes through a :class:`System` (``ip``, ``/proc``, signals), so the
teardown logic is tested without root against a fake one.

Teardown (:func:`teardown`) never trusts the state file alone: after the
recorded processes it stops any process inside a namespace with the lab's
prefix or whose command line names the lab's directory, then deletes the
recorded namespaces and any other with the prefix. Deleting a namespace
destroys its veths (both ends) and bridge. Running it twice is a no-op.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from netvirt.dataplane import netns as nsutil
from netvirt.lab.state import LabState, ProcessRecord

PREFIX_ROOT = "nvl"
IFNAMSIZ = 15
BRIDGE = "br0"
UPLINK = "ul0"
VM_IFACE = "eth0"
EXT_IFACE = "ext-gw"
STOP_GRACE = 3.0
SERVER_GRACE = 0.5
SERVERS = ("serve", "redis")


@dataclass(frozen=True)
class Names:
    """Every name the lab derives from its own and its nodes' names."""

    lab: str

    @property
    def prefix(self) -> str:
        return f"{PREFIX_ROOT}-{self.lab}-"

    def ns(self, node: str) -> str:
        return self.prefix + node

    @property
    def underlay_ns(self) -> str:
        return self.ns("ul")

    @property
    def external_ns(self) -> str:
        return self.ns("ext")

    def bridge_port(self, host: str) -> str:
        return _ifname(f"hv-{host}")

    def vm_port(self, vm: str) -> str:
        """The host-side end of a VM's veth (the agent's interface name)."""
        return _ifname(f"vm-{vm}")

    def external_link(self, host: str) -> str:
        """A gateway's link in the external namespace (the peer of its ``ext-gw``)."""
        return _ifname(f"gw-{host}")


def _ifname(name: str) -> str:
    if not 0 < len(name.encode()) <= IFNAMSIZ:
        raise ValueError(f"interface name {name!r} is longer than {IFNAMSIZ} bytes")
    return name


class System(Protocol):
    """What the lab asks of the machine (a fake implements it in unit tests)."""

    def ip(self, *args: str, netns: str | None = None, check: bool = True) -> str: ...

    def netns_list(self, prefix: str) -> list[str]: ...

    def netns_add(self, name: str) -> None: ...

    def netns_delete(self, name: str) -> None: ...

    def netns_pids(self, name: str) -> list[int]: ...

    def pids_with_arg(self, needle: str) -> list[int]: ...

    def start_time(self, pid: int) -> int | None: ...

    def signal(self, pid: int, sig: int) -> None: ...

    def spawn(self, argv: Sequence[str], log: Path, env: dict[str, str] | None = None) -> int: ...


class RealSystem:
    """The machine itself: iproute2, /proc and signals (root)."""

    def __init__(self) -> None:
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    def ip(self, *args: str, netns: str | None = None, check: bool = True) -> str:
        return nsutil.ip(*args, netns=netns, check=check)

    def netns_list(self, prefix: str) -> list[str]:
        return nsutil.list_netns(prefix)

    def netns_add(self, name: str) -> None:
        nsutil.create_netns(name)

    def netns_delete(self, name: str) -> None:
        nsutil.delete_netns(name)

    def netns_pids(self, name: str) -> list[int]:
        out = nsutil.ip("netns", "pids", name, check=False)
        return [int(p) for p in out.split() if p.isdigit()]

    def pids_with_arg(self, needle: str) -> list[int]:
        """Processes whose command line contains ``needle`` (not this one)."""
        found: list[int] = []
        mine = {os.getpid(), os.getppid()}
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) in mine:
                continue
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if needle.encode() in cmdline:
                found.append(int(entry))
        return found

    def start_time(self, pid: int) -> int | None:
        """Field 22 of /proc/PID/stat; ``None`` when gone or a zombie (reaped if ours)."""
        child = self._children.get(pid)
        if child is not None and child.poll() is not None:
            del self._children[pid]
            return None
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] in ("Z", "X"):
            return None
        return int(fields[19])

    def signal(self, pid: int, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)

    def spawn(self, argv: Sequence[str], log: Path, env: dict[str, str] | None = None) -> int:
        """Start a daemon in its own session, output to ``log``; it outlives this process."""
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            child = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                env={**os.environ, **env} if env else None,
            )
        self._children[child.pid] = child
        return child.pid


# ---------------------------------------------------------------------- building


def add_namespace(system: System, state: LabState, name: str) -> str:
    """Create a namespace (recorded first, so a failure still gets cleaned up)."""
    if name not in state.namespaces:
        state.namespaces.append(name)
        state.save()
    system.netns_add(name)
    return name


def quiet_ipv6(system: System, ns: str) -> None:
    """No IPv6 on links created later in ``ns`` (hosts have no business talking)."""
    for scope in ("default", "all"):
        system.ip("netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{scope}.disable_ipv6=1")


def build_underlay(system: System, state: LabState, names: Names, mtu: int) -> None:
    ns = add_namespace(system, state, names.underlay_ns)
    system.ip("link", "add", BRIDGE, "mtu", str(mtu), "type", "bridge", netns=ns)
    system.ip("link", "set", "dev", BRIDGE, "up", netns=ns)


def add_host(
    system: System, state: LabState, names: Names, host: str, address: str, mtu: int
) -> str:
    """A host namespace on the underlay bridge with ``address`` (CIDR) on ``ul0``."""
    ns = add_namespace(system, state, names.ns(host))
    quiet_ipv6(system, ns)
    port = names.bridge_port(host)
    _veth(system, port, names.underlay_ns, UPLINK, ns, mtu)
    system.ip("link", "set", "dev", port, "master", BRIDGE, netns=names.underlay_ns)
    system.ip("address", "add", address, "dev", UPLINK, netns=ns)
    return ns


def _veth(system: System, a: str, ns_a: str, b: str, ns_b: str, mtu: int, mac_b: str = "") -> None:
    """A veth pair created directly in its namespaces (never in the machine's own)."""
    args = ["link", "add", "name", a, "mtu", str(mtu), "type", "veth", "peer", "name", b]
    args += ["mtu", str(mtu), *(["address", mac_b] if mac_b else []), "netns", ns_b]
    system.ip(*args, netns=ns_a)
    system.ip("link", "set", "dev", a, "up", netns=ns_a)
    system.ip("link", "set", "dev", b, "up", netns=ns_b)


def add_vm(
    system: System, state: LabState, names: Names, vm: str, host: str, mac: str, mtu: int
) -> str:
    """A VM namespace whose ``eth0`` (MAC ``mac``) pairs with ``vm-<vm>`` on its host."""
    ns = add_namespace(system, state, names.ns(vm))
    _veth(system, names.vm_port(vm), names.ns(host), VM_IFACE, ns, mtu, mac_b=mac)
    return ns


# The external namespace is the upstream router of every gateway: one link per gateway
# and an L4-hashed multipath route for the external subnet over those that are active.
# Replies may come back through another gateway than their request: no rp_filter.
EXTERNAL_SYSCTLS = (
    "net.ipv4.fib_multipath_hash_policy=1",
    "net.ipv4.conf.all.rp_filter=0",
    "net.ipv4.conf.default.rp_filter=0",
    "net.ipv4.conf.all.ignore_routes_with_linkdown=1",
)


def add_external(
    system: System,
    state: LabState,
    names: Names,
    hosts: Sequence[str],
    mac: str,
    cidr: str,
    mtu: int,
) -> str:
    """The external namespace with a link to each gateway host; ``cidr`` (the gateway IP
    with its prefix) on every link, routed over none of them yet (:func:`route_external`)."""
    ns = add_namespace(system, state, names.external_ns)
    for setting in EXTERNAL_SYSCTLS:
        system.ip("netns", "exec", ns, "sysctl", "-qw", setting)
    for host in hosts:
        add_uplink(system, names, host, mac, cidr, mtu)
    return ns


def add_uplink(system: System, names: Names, host: str, mac: str, cidr: str, mtu: int) -> None:
    """A gateway's uplink: ``ext-gw`` on the host, ``gw-<host>`` (MAC ``mac``, the upstream
    port's) in the external namespace, holding ``cidr`` without a prefix route."""
    link, ns = names.external_link(host), names.external_ns
    _veth(system, EXT_IFACE, names.ns(host), link, ns, mtu, mac_b=mac)
    system.ip("address", "add", cidr, "dev", link, "noprefixroute", netns=ns)


def set_uplink(system: System, names: Names, host: str, up: bool) -> None:
    """Carrier of a gateway's link, seen from the external namespace (the lab's stand-in
    for the upstream router's BFD session with that gateway)."""
    state = "up" if up else "down"
    system.ip("link", "set", "dev", names.external_link(host), state, netns=names.external_ns)


def route_external(system: System, names: Names, subnet: str, hosts: Sequence[str]) -> None:
    """Route ``subnet`` over the links of ``hosts`` (one flow per link by L4 hash)."""
    ns = names.external_ns
    if not hosts:
        system.ip("route", "del", subnet, netns=ns, check=False)
        return
    hops = [arg for host in hosts for arg in ("nexthop", "dev", names.external_link(host))]
    if len(hosts) == 1:
        hops = hops[1:]  # a single path: plain "dev LINK"
    system.ip("route", "replace", subnet, *hops, netns=ns)


def move_vm(system: System, names: Names, vm: str, old_host: str, new_host: str) -> None:
    """Move a VM's host-side veth end to another host; the VM's ``eth0`` keeps its config."""
    port = names.vm_port(vm)
    system.ip("link", "set", "dev", port, "netns", names.ns(new_host), netns=names.ns(old_host))
    system.ip("link", "set", "dev", port, "up", netns=names.ns(new_host))


# ---------------------------------------------------------------------- processes


def start_process(
    system: System,
    role: str,
    argv: Sequence[str],
    log: Path,
    netns_name: str | None = None,
    env: dict[str, str] | None = None,
) -> ProcessRecord:
    """Start a daemon (inside ``netns_name`` when given) and record how to recognize it.

    ``env`` adds variables (secrets go there, not on a command line ``ps`` shows).
    """
    full = ["ip", "netns", "exec", netns_name, *argv] if netns_name else list(argv)
    pid = system.spawn(full, log, env)
    return ProcessRecord(
        role=role,
        pid=pid,
        start_time=system.start_time(pid),
        argv=list(argv),
        netns=netns_name,
        log=str(log),
    )


def is_alive(system: System, proc: ProcessRecord) -> bool:
    """The recorded process still runs (same pid *and* start time)."""
    now = system.start_time(proc.pid)
    return now is not None and (proc.start_time is None or now == proc.start_time)


def stop_pids(system: System, pids: dict[int, int | None], grace: float = STOP_GRACE) -> None:
    """SIGTERM each ``pid`` that still has its start time, SIGKILL what remains after ``grace``."""

    def running() -> list[int]:
        out = []
        for pid, start in pids.items():
            now = system.start_time(pid)
            if now is not None and (start is None or now == start):
                out.append(pid)
        return out

    for pid in running():
        system.signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while (left := running()) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in left:
        system.signal(pid, signal.SIGKILL)
    deadline = time.monotonic() + grace
    while running() and time.monotonic() < deadline:
        time.sleep(0.05)


def stop_process(system: System, proc: ProcessRecord, grace: float = STOP_GRACE) -> None:
    stop_pids(system, {proc.pid: proc.start_time}, grace)


@dataclass
class TeardownReport:
    processes: int = 0
    namespaces: int = 0
    remaining: tuple[str, ...] = ()


def teardown(
    system: System, names: Names, state: LabState | None, lab_dir: Path, grace: float = STOP_GRACE
) -> TeardownReport:
    """Stop every lab process and delete every lab namespace; safe to run again.

    Users of the server go first (services, agents), then the server and
    Redis with a short grace: they hold nothing worth a clean shutdown (the
    store is disposable) and uvicorn would otherwise wait for long-polls.
    """
    stopped = 0
    clients = [p for p in state.all_processes() if p.role not in SERVERS] if state else []
    servers = [p for p in state.all_processes() if p.role in SERVERS] if state else []
    for batch, batch_grace in ((clients, grace), (servers, SERVER_GRACE)):
        pids = {p.pid: p.start_time for p in batch if is_alive(system, p)}
        stop_pids(system, pids, batch_grace)
        stopped += len(pids)
    stray: dict[int, int | None] = {}
    for ns in system.netns_list(names.prefix):
        stray |= {pid: system.start_time(pid) for pid in system.netns_pids(ns)}
    stray |= {pid: system.start_time(pid) for pid in system.pids_with_arg(f"{lab_dir}/")}
    stray = {pid: start for pid, start in stray.items() if start is not None}
    stop_pids(system, stray, SERVER_GRACE)
    existing = system.netns_list(names.prefix)
    for ns in sorted({*(state.namespaces if state else []), *existing}):
        system.netns_delete(ns)
    return TeardownReport(
        processes=stopped + len(stray),
        namespaces=len(existing),
        remaining=tuple(system.netns_list(names.prefix)),
    )
