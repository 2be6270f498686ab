"""``netvirt lab up`` and the operations on a running lab.

``up`` builds in this order, saving the state file after each step so that
``down`` (run automatically when a step fails) removes whatever exists:

1. the underlay namespace and bridge, one namespace per host on it;
2. ``netvirt serve`` on a free loopback port with an SQLite store in the
   lab's directory (the admin token and one host token per host are minted
   in the store first, so no secret is scraped from output), and
   ``redis-server`` when the topology needs shared NF state;
3. one ``netvirt agent`` per host (started early: they boot while the API
   objects are created, and follow them as they appear);
4. the API objects, through the typed client as any tenant would
   (:mod:`netvirt.lab.api`);
5. the VM namespaces, each ``eth0`` paired with an interface on its host and
   plugged by a file in that host agent's plug directory;
6. wait until every host has installed the newest generation and every
   plugged port is ACTIVE;
7. DHCP in every VM (busybox udhcpc, see :mod:`netvirt.lab.dhcp`), services.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from netvirt.api.client import ApiError, NetvirtClient
from netvirt.lab import dhcp, net, redis_cluster
from netvirt.lab.api import ApiBuilder
from netvirt.lab.net import Names, System
from netvirt.lab.state import (
    HostRecord,
    LabState,
    ProcessRecord,
    lab_dir,
)
from netvirt.lab.topology import Topology

Log = Callable[[str], None]
SERVER_TIMEOUT = 30.0
INSTALL_TIMEOUT = 60.0
DEVICE_OWNER = "compute:netvirt-lab"
EXTERNAL_OWNER = "network:external_gateway"


class LabError(RuntimeError):
    """A lab operation that failed; the message says what and where to look."""


def _quiet(_msg: str) -> None:
    return None


# ---------------------------------------------------------------------- small helpers


def free_port() -> int:
    """A TCP port nobody listens on right now (loopback)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def python_argv(*args: str) -> list[str]:
    """Run a ``netvirt`` verb with this interpreter (no reliance on PATH)."""
    return [sys.executable, "-m", "netvirt.cli.main", *args]


def log_tail(path: str | None, lines: int = 15) -> str:
    if not path:
        return ""
    try:
        text = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(f"    {line}" for line in text[-lines:])


def _wait(what: str, ready: Callable[[], bool], timeout: float, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise LabError(f"{what}: not ready within {timeout:g}s")
        time.sleep(interval)


def write_plug(directory: Path, iface: str, port_id: str) -> None:
    """Plug ``iface`` into the host's agent: a file named after it holding the port id."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{iface}.tmp"
    tmp.write_text(port_id + "\n")
    os.replace(tmp, directory / iface)


def unplug(directory: Path, iface: str) -> None:
    (directory / iface).unlink(missing_ok=True)


# ---------------------------------------------------------------------- processes


def start_server(system: System, state: LabState, hosts: list[str]) -> dict[str, str]:
    """Mint credentials in a fresh store, start ``netvirt serve``; returns host tokens."""
    from netvirt.northbound import identity
    from netvirt.northbound.context import Context
    from netvirt.northbound.db import Database

    directory = Path(state.dir)
    db_url = f"sqlite:///{directory / 'netvirt.db'}"
    database = Database(db_url)
    try:
        with database.write() as session:
            admin = identity.bootstrap(session)
            assert admin is not None
            tokens = {
                h: identity.create_token(session, Context.admin(), "admin", "host", h)["token"]
                for h in hosts
            }
    finally:
        database.dispose()
    port = free_port()
    state.url = f"http://127.0.0.1:{port}"
    state.admin_token = str(admin["token"])
    argv = python_argv("serve", "--host", "127.0.0.1", "--port", str(port), "--db", db_url)
    proc = net.start_process(system, "serve", argv, directory / "logs" / "serve.log")
    state.processes.append(proc)
    state.save()
    with NetvirtClient(state.url, state.admin_token, timeout=5) as client:
        _wait_api(system, proc, client)
    return tokens


def _wait_api(system: System, proc: ProcessRecord, client: NetvirtClient) -> None:
    deadline = time.monotonic() + SERVER_TIMEOUT
    while True:
        try:
            client.status()
            return
        except ApiError as exc:
            if exc.status != 0:
                raise LabError(f"netvirt serve answers {exc.status}: {exc.message}") from None
        if not net.is_alive(system, proc):
            raise LabError(f"netvirt serve exited; its log:\n{log_tail(proc.log)}")
        if time.monotonic() > deadline:
            raise LabError(f"netvirt serve did not answer within {SERVER_TIMEOUT:g}s")
        time.sleep(0.1)


def start_redis(system: System, state: LabState) -> None:
    """A private redis-server on loopback, no persistence; its title names the lab dir."""
    if shutil.which("redis-server") is None:
        raise LabError("redis-server is not installed: run scripts/setup.sh as root")
    port = free_port()
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    argv += ["--appendonly", "no", "--dir", state.dir]
    argv += ["--proc-title-template", f"{{title}} {{listen-addr}} {state.dir}/"]
    proc = net.start_process(system, "redis", argv, Path(state.dir) / "logs" / "redis.log")
    state.processes.append(proc)
    state.state_store = f"redis://127.0.0.1:{port}/0"
    state.save()

    def ready() -> bool:
        if not net.is_alive(system, proc):
            raise LabError(f"redis-server exited; its log:\n{log_tail(proc.log)}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
        return False

    _wait("redis-server", ready, SERVER_TIMEOUT)


HOST_TOKEN_ENV = "NETVIRT_HOST_TOKEN"
MEMBERS_TIMEOUT = 60.0  # seconds for health checks to bring every LB member ONLINE


def datapath_argv(
    state: LabState,
    host: HostRecord,
    underlay_mtu: int,
    state_fail: str = "closed",
    offload: bool = True,
    syn_templates: bool | None = None,
) -> list[str]:
    """The datapath's command line: interfaces, tunnels, NF state, control socket."""
    argv = python_argv("datapath", "--name", host.name, "--netns", host.netns)
    argv.append("--offload" if offload else "--no-offload")
    if syn_templates is not None:  # else the environment's choice (benchmarks' A/B)
        argv.append("--syn-templates" if syn_templates else "--no-syn-templates")
    argv += ["--underlay-ip", host.underlay_ip, "--encap", host.encap]
    argv += ["--underlay-mtu", str(underlay_mtu), "--control", host.control]
    if state.state_store:
        argv += ["--state-store", state.state_store, "--state-fail", state_fail]
    return [*argv, "--iface-dir", host.iface_dir, "--status-file", host.datapath_status_file]


def agent_argv(state: LabState, host: HostRecord) -> list[str]:
    """The agent's command line; its token travels in the environment (``--token``'s envvar)."""
    argv = python_argv("agent", "--name", host.name, "--netns", host.netns)
    argv += ["--underlay-ip", host.underlay_ip, "--encap", host.encap, "--url", state.url]
    return [*argv, "--datapath", host.control, "--status-file", host.status_file]


def start_datapath(system: System, state: LabState, name: str) -> ProcessRecord:
    host = state.hosts[name]
    log = Path(state.dir) / "logs" / f"datapath-{name}.log"
    host.datapath = net.start_process(system, f"datapath:{name}", host.datapath_argv, log)
    state.save()
    return host.datapath


def start_agent(system: System, state: LabState, name: str) -> ProcessRecord:
    host = state.hosts[name]
    log = Path(state.dir) / "logs" / f"agent-{name}.log"
    env = {HOST_TOKEN_ENV: host.token}
    host.agent = net.start_process(system, f"agent:{name}", host.agent_argv, log, env=env)
    state.save()
    return host.agent


# ---------------------------------------------------------------------- waiting


def wait_installed(
    state: LabState,
    system: System,
    timeout: float = INSTALL_TIMEOUT,
    bound: dict[str, list[str]] | None = None,
) -> None:
    """Until every host installed the newest generation and every plugged port is ACTIVE.

    ``bound`` adds interfaces that a host's agent must report bound in its
    status file (a port that was ACTIVE elsewhere stays ACTIVE while it moves).
    Every gateway's uplink must be bound too: the external network's localnet
    port is plugged on all of them and claimed by none, so it is never ACTIVE.
    """
    wanted = {vm.port_id: name for name, vm in state.vms.items()}
    needed = dict(bound or {})
    if state.external is not None:
        for host in set(state.external.links) & set(running_hosts(state)):
            needed[host] = sorted({*needed.get(host, []), state.external.host_iface})
    deadline = time.monotonic() + timeout
    with NetvirtClient(state.url, state.admin_token, timeout=10) as admin:
        while True:
            missing = _not_installed(state, system, admin, wanted)
            missing += _not_bound(state, needed)
            if not missing:
                return
            if time.monotonic() > deadline:
                raise LabError(f"not installed within {timeout:g}s: {'; '.join(missing)}")
            time.sleep(0.2)


def agent_status(host: HostRecord) -> dict[str, Any]:
    """The agent's status file (``{}`` while it has written none)."""
    try:
        data = json.loads(Path(host.status_file).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _not_bound(state: LabState, bound: dict[str, list[str]]) -> list[str]:
    """What the agents' own status files do not show yet (written by the current process)."""
    missing = []
    for host, ifaces in bound.items():
        record = state.hosts[host]
        status = agent_status(record)
        if record.agent is None or status.get("pid", record.agent.pid) != record.agent.pid:
            missing.append(f"no status from the agent of {host} yet")
            continue
        have = status.get("bound") or {}
        missing += [f"{iface} not bound on {host}" for iface in ifaces if iface not in have]
    return missing


def _not_installed(
    state: LabState, system: System, admin: NetvirtClient, wanted: dict[str, str]
) -> list[str]:
    running = running_hosts(state)
    for name in running:
        host = state.hosts[name]
        for what, proc in (("agent", host.agent), ("datapath", host.datapath)):
            if proc is None:
                raise LabError(f"the {what} of {name} is stopped: `netvirt lab host start {name}`")
            if not net.is_alive(system, proc):
                raise LabError(f"the {what} of {name} exited; its log:\n{log_tail(proc.log)}")
    status = admin.status()
    missing: list[str] = []
    reported = {h["host"]: h["installed_generation"] for h in status["hosts"]}
    for name in running:
        if reported.get(name, -1) < status["nb_generation"]:
            missing.append(f"{name} installed {reported.get(name, 'nothing')}")
    everyone = len(running) == len(state.hosts)  # a stopped host's report stays behind
    if everyone and status["installed_generation"] < status["nb_generation"]:
        missing.append(
            f"generation {status['nb_generation']} (installed {status['installed_generation']})"
        )
    ports = {p["id"]: p for p in admin.list_ports(fields=["id", "status"])}
    down = [who for pid, who in wanted.items() if ports.get(pid, {}).get("status") != "ACTIVE"]
    if down:
        missing.append(f"ports not ACTIVE: {', '.join(sorted(down))}")
    return missing


def running_hosts(state: LabState) -> list[str]:
    """Hosts whose agent the lab has not stopped (`lab host stop`): the ones to wait for."""
    return [name for name, host in state.hosts.items() if host.agent is not None]


# ---------------------------------------------------------------------- the lab itself


class Lab:
    """A lab on this machine: its names, its state, the machine it runs on."""

    def __init__(self, state: LabState, system: System) -> None:
        self.state = state
        self.system = system
        self.names = Names(state.name)

    @property
    def topology(self) -> Topology:
        return Topology.model_validate(self.state.topology)

    @classmethod
    def open(cls, name: str, system: System, root: Path | None = None) -> Lab:
        state = LabState.load(lab_dir(name, root))
        if state is None:
            raise LabError(f"lab {name!r} is not up (no state in {lab_dir(name, root)})")
        return cls(state, system)

    def admin(self) -> NetvirtClient:
        return NetvirtClient(self.state.url, self.state.admin_token)

    # -------------------------------------------------------------- host agents

    def host_stop(self, host: str, *, hard: bool = False, agent_only: bool = False) -> None:
        """Stop a host's agent and (unless ``agent_only``) its datapath.

        A gateway also leaves the external namespace's ECMP route and its link there
        goes down, as an upstream router's BFD would notice: gently (``hard`` false)
        the route drops it first and its datapath says goodbye to its peers as it
        stops; killed, the route and link follow the kill.
        """
        record = self._host(host)
        procs = [record.agent] if agent_only else [record.agent, record.datapath]
        running = [p for p in procs if p is not None and net.is_alive(self.system, p)]
        if not running:
            what = "agent" if agent_only else "agent and datapath"
            raise LabError(f"the {what} of {host} are not running")
        uplink = self._has_uplink(host) and not agent_only
        if uplink and not hard:
            self._route_gateway(host, active=False)
        for proc in running:
            if hard:
                self.system.signal(proc.pid, 9)
            net.stop_process(self.system, proc)
        if uplink:
            if hard:
                self._route_gateway(host, active=False)
            net.set_uplink(self.system, self.names, host, up=False)
        record.agent = None
        if not agent_only:
            record.datapath = None
        self.state.save()

    def host_start(self, host: str, *, wait: bool = True) -> ProcessRecord:
        """Start what is stopped of a host (datapath first), then wait until installed."""
        record = self._host(host)
        if record.agent is not None and net.is_alive(self.system, record.agent):
            raise LabError(f"the agent of {host} is already running (pid {record.agent.pid})")
        uplink = self._has_uplink(host)
        if uplink:
            net.set_uplink(self.system, self.names, host, up=True)
        if record.datapath is None or not net.is_alive(self.system, record.datapath):
            start_datapath(self.system, self.state, host)
        proc = start_agent(self.system, self.state, host)
        if wait:
            wait_installed(self.state, self.system, bound={host: self.plugged(host)})
        if uplink:  # ready: the upstream router may send it flows now
            self._route_gateway(host, active=True)
        return proc

    def plugged(self, host: str) -> list[str]:
        """The interfaces the lab plugged on ``host``."""
        ifaces = [vm.host_iface for vm in self.state.vms.values() if vm.host == host]
        ext = self.state.external
        return ifaces + ([ext.host_iface] if ext is not None and host in ext.links else [])

    def _has_uplink(self, host: str) -> bool:
        ext = self.state.external
        return ext is not None and host in ext.links

    def _route_gateway(self, host: str, *, active: bool) -> None:
        """Add ``host`` to (or remove it from) the external namespace's ECMP route."""
        ext = self.state.external
        assert ext is not None
        ext.active = [
            h for h in ext.links if (h == host and active) or (h != host and h in ext.active)
        ]
        net.route_external(self.system, self.names, ext.subnet_cidr, ext.active)
        self.state.save()

    def _host(self, host: str) -> HostRecord:
        if host not in self.state.hosts:
            known = ", ".join(self.state.hosts)
            raise LabError(f"no host {host!r} in lab {self.state.name} (hosts: {known})")
        return self.state.hosts[host]

    # -------------------------------------------------------------- migration

    def migrate(self, vm: str, host: str) -> None:
        """Move a VM to ``host``: same namespace, MAC and address; new host-side link."""
        if vm not in self.state.vms:
            raise LabError(f"no VM {vm!r} in lab {self.state.name}")
        record = self.state.vms[vm]
        target = self._host(host)
        if record.host == host:
            raise LabError(f"{vm} is already on {host}")
        stopped = [h.name for h in self.state.hosts.values() if h.agent is None]
        if stopped:
            raise LabError(f"start the stopped agents first: {', '.join(stopped)}")
        old = self.state.hosts[record.host]
        # rebind first and let every host install it: the old host then treats the
        # port as requested elsewhere and never reports it DOWN after the unplug
        binding: dict[str, Any] = {"binding:host_id": host}
        with self.admin() as admin:
            admin.update_port(record.port_id, wait="installed", **binding)
        unplug(Path(old.iface_dir), record.host_iface)
        net.move_vm(self.system, self.names, vm, old.name, host)
        write_plug(Path(target.iface_dir), record.host_iface, record.port_id)
        record.host = host
        self.state.save()
        wait_installed(self.state, self.system, bound={host: [record.host_iface]})


# ---------------------------------------------------------------------- up / down


def up(
    topo: Topology,
    topology_file: str,
    *,
    system: System,
    root: Path | None = None,
    log: Log = _quiet,
    keep_on_error: bool = False,
) -> LabState:
    """Build the lab; on failure tear down what was made (unless ``keep_on_error``)."""
    directory = lab_dir(topo.name, root)
    names = Names(topo.name)
    if LabState.load(directory) is not None or system.netns_list(names.prefix):
        raise LabError(
            f"lab {topo.name!r} exists already (or left namespaces {names.prefix}*): "
            f"run `netvirt lab down --lab {topo.name}` first"
        )
    shutil.rmtree(directory, ignore_errors=True)  # files of a lab that is gone
    directory.mkdir(parents=True, mode=0o700)
    state = LabState(
        name=topo.name,
        prefix=names.prefix,
        dir=str(directory),
        topology_file=topology_file,
        topology=topo.model_dump(mode="json", by_alias=True),
    )
    state.save()
    try:
        _build(topo, state, system, names, log)
    except BaseException:
        if not keep_on_error:
            net.teardown(system, names, state, directory)
            shutil.rmtree(directory, ignore_errors=True)
        raise
    return state


def _build(topo: Topology, state: LabState, system: System, names: Names, log: Log) -> None:
    _build_hosts(topo, state, system, names)
    log(f"underlay and {len(topo.hosts)} host namespaces")
    tokens = start_server(system, state, [h.name for h in topo.hosts])
    log(f"netvirt serve on {state.url}")
    if topo.state_backend() == "redis":
        start_redis(system, state)
        log(f"redis-server for shared NF state ({state.state_store})")
    elif topo.state_backend() == "redis-cluster":
        redis_cluster.start_cluster(system, state)
        log(f"redis cluster of 3 nodes for shared NF state ({state.state_store})")
    for host in topo.hosts:
        record = state.hosts[host.name]
        record.token = tokens[host.name]
        record.datapath_argv = datapath_argv(
            state, record, topo.underlay.mtu, topo.state_fail, topo.offload, topo.syn_templates
        )
        record.agent_argv = agent_argv(state, record)
        start_datapath(system, state, host.name)
        start_agent(system, state, host.name)
    log(f"{len(topo.hosts)} datapaths and agents started")
    builder = ApiBuilder(state, topo)
    try:
        builder.build()
    finally:
        builder.close()
    log(f"API objects of {len(topo.projects)} project(s), {len(topo.vms)} VM port(s)")
    _build_vms(state, system, names)
    wait_installed(state, system)
    log("installed on every host")
    leases = address_vms(state)
    log(f"DHCP: {len(leases)} leases")
    start_services(state, system)
    if wait_members_online(state):
        # ONLINE in the API is not yet a VIP that uses the member: every host must have
        # installed the generation compiled from it (else the first connections after
        # `lab up` all went to the members that came up first)
        wait_installed(state, system)
        log("load balancer members ONLINE (health checks on the hosts) and installed")
    state.ready = True
    state.save()


def _build_hosts(topo: Topology, state: LabState, system: System, names: Names) -> None:
    net.build_underlay(system, state, names, topo.underlay.mtu)
    underlay = ipaddress.IPv4Network(topo.underlay.cidr)
    addresses = list(underlay.hosts())[10 : 10 + len(topo.hosts)]
    for host, address in zip(topo.hosts, addresses, strict=True):
        ns = net.add_host(
            system, state, names, host.name, f"{address}/{underlay.prefixlen}", topo.underlay.mtu
        )
        host_dir = Path(state.dir) / "hosts" / host.name
        (host_dir / "ifaces").mkdir(parents=True, exist_ok=True)
        state.hosts[host.name] = HostRecord(
            name=host.name,
            netns=ns,
            underlay_ip=str(address),
            encap=host.encap,
            gateway=host.gateway,
            iface_dir=str(host_dir / "ifaces"),
            status_file=str(host_dir / "status.json"),
        )
        state.save()


def _build_vms(state: LabState, system: System, names: Names) -> None:
    for name, vm in state.vms.items():
        vm.netns = net.add_vm(system, state, names, name, vm.host, vm.mac, vm.mtu)
        vm.host_iface = names.vm_port(name)
        write_plug(Path(state.hosts[vm.host].iface_dir), vm.host_iface, vm.port_id)
        state.save()
    ext = state.external
    if ext is not None:
        cidr, gateways = f"{ext.ip}/{ext.prefixlen}", list(ext.links)
        ext.netns = net.add_external(system, state, names, gateways, ext.mac, cidr, ext.mtu)
        for host in gateways:  # one localnet port, plugged on every gateway's uplink
            write_plug(Path(state.hosts[host].iface_dir), ext.host_iface, ext.port_id)
        net.route_external(system, names, ext.subnet_cidr, gateways)
        ext.active = gateways
        state.save()


def address_vms(state: LabState) -> dict[str, dhcp.Lease]:
    """DHCP in every VM at once; a VM that gets no lease or a wrong one fails the build."""
    directory = Path(state.dir) / "dhcp"
    script = dhcp.write_script(directory)

    def one(name: str) -> dhcp.Lease:
        vm = state.vms[name]
        return dhcp.acquire(vm.netns, script, directory / f"{name}.lease", name)

    names = list(state.vms)
    try:
        with ThreadPoolExecutor(max_workers=max(1, min(8, len(names)))) as pool:
            leases = dict(zip(names, pool.map(one, names), strict=True))
    except dhcp.DhcpError as exc:
        raise LabError(str(exc)) from None
    for name, lease in leases.items():
        vm = state.vms[name]
        if lease.ip != vm.ip:
            raise LabError(f"{name}: DHCP offered {lease.ip}, the API port has {vm.ip}")
        vm.lease = dict(lease.raw)
    state.save()
    return leases


def start_services(state: LabState, system: System) -> None:
    """A tiny web server per ``http`` service; its page names the VM (to see LB spread)."""
    started: list[tuple[ProcessRecord, int]] = []

    def listening(proc: ProcessRecord, port: int) -> Callable[[], bool]:
        return lambda: _listening(proc.pid, port)

    for name, vm in state.vms.items():
        for service in vm.services:
            kind, _, port = service.partition(":")
            root = Path(state.dir) / "www" / name
            root.mkdir(parents=True, exist_ok=True)
            (root / "index.html").write_text(f"{name}\n")
            argv = [sys.executable, "-m", "http.server", port, "--bind", "0.0.0.0"]
            argv += ["--directory", str(root)]
            log = Path(state.dir) / "logs" / f"{name}-{kind}-{port}.log"
            proc = net.start_process(system, f"service:{name}:{service}", argv, log, vm.netns)
            state.processes.append(proc)
            started.append((proc, int(port)))
    state.save()
    for proc, port_number in started:
        _wait(f"{proc.role} listening", listening(proc, port_number), 10.0)


def member_statuses(admin: NetvirtClient) -> dict[str, str]:
    """Operating status of every member of a monitored pool, by member name."""
    monitors = [m for m in admin.list_healthmonitors() if m["admin_state_up"]]
    monitored = {pool["id"] for m in monitors for pool in m["pools"]}
    out: dict[str, str] = {}
    for pool_id in sorted(monitored):
        for member in admin.list_members(pool_id):
            out[member["name"] or member["id"]] = member["operating_status"]
    return out


def wait_members_online(state: LabState, timeout: float = MEMBERS_TIMEOUT) -> bool:
    """Until every member of a monitored pool is ONLINE (its host's health checks passed:
    only then does the VIP use it). False when there is no monitored pool."""
    deadline = time.monotonic() + timeout
    with NetvirtClient(state.url, state.admin_token, timeout=10) as admin:
        while True:
            statuses = member_statuses(admin)
            if all(s == "ONLINE" for s in statuses.values()):
                return bool(statuses)
            if time.monotonic() > deadline:
                down = ", ".join(f"{n} {s}" for n, s in sorted(statuses.items()) if s != "ONLINE")
                raise LabError(f"load balancer members not ONLINE within {timeout:g}s: {down}")
            time.sleep(0.2)


def _listening(pid: int, port: int) -> bool:
    """The process's namespace has a TCP socket listening on ``port`` (/proc/PID/net/tcp)."""
    try:
        lines = Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return False
    for line in lines:
        fields = line.split()
        if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
            return True
    return False


def down(name: str, *, system: System, root: Path | None = None) -> net.TeardownReport:
    """Remove everything lab ``name`` made; a lab that is not there is fine."""
    directory = lab_dir(name, root)
    try:
        state = LabState.load(directory)
    except (ValueError, OSError):
        state = None  # unreadable: fall back to the prefix and directory sweep
    report = net.teardown(system, Names(name), state, directory)
    if report.remaining:
        raise LabError(f"namespaces left behind: {', '.join(report.remaining)}")
    shutil.rmtree(directory, ignore_errors=True)
    return report
