"""Control-plane figures: N ports over M networks with security groups, on one host.

The same logical content on both sides: M networks with one IPv4 /28 subnet
each (DHCP on), N ports spread evenly (10 per network at both default
scales), port security on, 10 security groups of 5 rules each (egress any,
IPv4 and IPv6; ingress tcp/22, ICMP, and anything from the group's own
members) assigned round-robin. ``host_ports`` of the ports (whole networks)
are bound to the one measured host, the others to hosts that run nothing
here (see :class:`Scale`).

* OVN: ``ovn-nbctl`` transactions of 100 networks with their DHCP options
  and ports, then the port groups and ACLs (what networking-ovn writes for
  security groups, with one drop port group for all ports); ovn-northd
  compiles; one ovn-controller binds the ports, which are OVS interfaces of
  ``type=dummy`` (ovs-vswitchd started with ``--enable-dummy``) on the netdev
  integration bridge. Installed = ``ovn-nbctl --wait=hv sync`` returned and
  every logical switch port is ``up``.
* netvirt: a lab with one real host holding an anchor VM; the objects are
  created through the API with bulk POSTs (500 per request) by the admin;
  netvirt serve's compiler compiles; one agent core (``nvagent.py``: the real
  agent over the southbound HTTP API, in-memory ports) plugs and claims the
  ports. Installed = its installed generation reached the NB generation and
  every port is claimed.

Figures per run (fresh daemons or a fresh lab each run): NB write time,
compile+install time (from the end of the NB writes, plugging included),
the total, memory per 1k ports (RSS of ovn-controller + ovs-vswitchd, or of
the agent, after minus before, per 1000 ports), CPU seconds per component,
and the latency from an API/NB port create to the first ping reply from a
new VM to the anchor, at that scale.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nvb import nvlab, ovn, results
from nvb.results import Series
from nvb.system import (
    BenchError,
    CpuSampler,
    Machine,
    Sample,
    bench_lock,
    in_netns,
    rss_kb,
    run,
    wait_for,
)

log = logging.getLogger("nvb")
GROUPS = 10
CHUNK_NETS = 100
API_CHUNK = 500
NVAGENT = str(Path(__file__).with_name("nvagent.py"))


def scale_name(ports: int) -> str:
    return f"control{ports // 1000}k" if ports % 1000 == 0 else f"control{ports}"


def subnet(i: int, base: str) -> ipaddress.IPv4Network:
    """The i-th /28 of a /16 (4096 of them)."""
    net = ipaddress.IPv4Network(base)
    return ipaddress.IPv4Network((int(net.network_address) + 16 * i, 28))


def ports_of(ports: int, networks: int) -> list[tuple[int, int]]:
    """(network index, port index within it) for every port, spread evenly."""
    return [(p % networks, p // networks) for p in range(ports)]


@dataclass(frozen=True)
class Scale:
    """N ports over M networks, ``host_ports`` of them (whole networks) on the measured host.

    The rest are bound to other hosts that run nothing here: the central compile
    covers every port, the host installs what its own VMs need, as in a real
    cloud (a host holding 10k ports is not a thing; 1k of 10k is already a lot).
    """

    ports: int
    networks: int
    host_ports: int

    @property
    def local_networks(self) -> int:
        return max(1, min(self.networks, self.networks * self.host_ports // self.ports))

    def local(self, port: int) -> bool:
        return port % self.networks < self.local_networks

    def local_ports(self) -> list[int]:
        return [p for p in range(self.ports) if self.local(p)]


def _mac(i: int) -> str:
    """A unique locally administered MAC per port index."""
    octets = (0xC0 | (i >> 24 & 0x3F), i >> 16 & 255, i >> 8 & 255, i & 255)
    return "0a:fb:" + ":".join(f"{o:02x}" for o in octets)


# ------------------------------------------------------------ the first packet after a port create


def first_reply(ping: subprocess.Popen[str], timeout: float) -> float:
    """The ``ping -D`` timestamp of the first reply (raises BenchError after ``timeout``)."""
    assert ping.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([ping.stdout], [], [], 0.5)
        if not ready:
            continue
        line = ping.stdout.readline()
        if not line:
            break
        if "bytes from" in line and line.startswith("["):
            return float(line[1 : line.index("]")])
    raise BenchError(f"no reply within {timeout:g}s")


@contextlib.contextmanager
def pinger(ns: str, ip: str) -> Iterator[subprocess.Popen[str]]:
    argv = in_netns(ns, ["ping", "-D", "-n", "-i", "0.002", "-W", "1", "-w", "120", ip])
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def new_vm(
    m: Machine,
    ns: str,
    host_ns: str,
    dev: str,
    mac: str,
    cidr: str,
    peer_ip: str,
    peer_mac: str,
    peer_ns: str,
) -> None:
    """A VM namespace, not plugged yet; static neighbours both ways (no ARP timers)."""
    m.netns(ns)
    m.veth("eth0", ns, dev, host_ns)
    run(["ip", "-n", ns, "link", "set", "eth0", "address", mac])
    run(["ip", "-n", ns, "addr", "add", cidr, "dev", "eth0"])
    ip = cidr.split("/")[0]
    run(
        [
            "ip",
            "-n",
            ns,
            "neigh",
            "replace",
            peer_ip,
            "lladdr",
            peer_mac,
            "dev",
            "eth0",
            "nud",
            "permanent",
        ]
    )
    run(
        [
            "ip",
            "-n",
            peer_ns,
            "neigh",
            "replace",
            ip,
            "lladdr",
            mac,
            "dev",
            "eth0",
            "nud",
            "permanent",
        ]
    )


def port_latency(m: Machine, ns: str, peer_ip: str, create_and_plug: Callable[[], None]) -> float:
    """ms from just before the port create to the first ping reply from ``ns``."""
    with bench_lock(), pinger(ns, peer_ip) as ping:
        time.sleep(0.05)
        started = time.time()
        create_and_plug()
        reply = first_reply(ping, 60)
    return (reply - started) * 1000


# ------------------------------------------------------------------ OVN


def ovn_nb_commands(ports: int, networks: int) -> Iterator[list[str]]:
    """ovn-nbctl argument lists: networks (with DHCP options and ports), then groups."""
    layout = ports_of(ports, networks)
    by_net: dict[int, list[int]] = {}
    for p, (n, _) in enumerate(layout):
        by_net.setdefault(n, []).append(p)
    for start in range(0, networks, CHUNK_NETS):
        cmd: list[str] = []
        for n in range(start, min(networks, start + CHUNK_NETS)):
            sub = subnet(n, "10.251.0.0/16")
            gw = str(sub.network_address + 1)
            cmd += [
                "--",
                "ls-add",
                f"nvbn{n}",
                "--",
                "set",
                "Logical_Switch",
                f"nvbn{n}",
                f"other_config:subnet={sub}",
                "--",
                f"--id=@d{n}",
                "create",
                "DHCP_Options",
                f"cidr={sub}",
                f'options={{"server_id"="{gw}", "server_mac"="0a:fb:ff:00:00:01", '
                f'"lease_time"="43200", "router"="{gw}"}}',
            ]
            for p in by_net.get(n, []):
                name, ip = f"nvbp{p}", str(sub.network_address + 2 + layout[p][1])
                addr = f"{_mac(p)} {ip}"
                cmd += [
                    "--",
                    "lsp-add",
                    f"nvbn{n}",
                    name,
                    "--",
                    "lsp-set-addresses",
                    name,
                    addr,
                    "--",
                    "lsp-set-port-security",
                    name,
                    addr,
                    "--",
                    "set",
                    "Logical_Switch_Port",
                    name,
                    f"dhcpv4_options=@d{n}",
                ]
        yield cmd[1:]
    everyone = [f"nvbp{p}" for p in range(ports)]
    cmd = ["pg-add", "nvbdrop", *everyone]
    cmd += ["--", "acl-add", "nvbdrop", "from-lport", "1001", "inport == @nvbdrop && ip", "drop"]
    cmd += ["--", "acl-add", "nvbdrop", "to-lport", "1001", "outport == @nvbdrop && ip", "drop"]
    for g in range(GROUPS):
        pg = f"nvbsg{g}"
        cmd += ["--", "pg-add", pg, *everyone[g::GROUPS]]
        for direction, match in (
            ("from-lport", f"inport == @{pg} && ip4"),
            ("from-lport", f"inport == @{pg} && ip6"),
            ("to-lport", f"outport == @{pg} && ip4 && tcp.dst == 22"),
            ("to-lport", f"outport == @{pg} && ip4 && icmp4"),
            ("to-lport", f"outport == @{pg} && ip4 && ip4.src == ${pg}_ip4"),
        ):
            cmd += ["--", "acl-add", pg, direction, "1002", match, "allow-related"]
    yield cmd


def ovn_run(m: Machine, scale: Scale, latency_runs: int) -> dict[str, float]:
    scope = m.scope()
    try:
        return _ovn_run(scope, scale, latency_runs)
    finally:
        scope.close()


def _lsp_up(central: ovn.Central) -> int:
    out = central.nbctl("--bare", "--columns=up", "list", "Logical_Switch_Port")
    return out.split().count("true")


def _ovn_run(m: Machine, scale: Scale, latency_runs: int) -> dict[str, float]:
    central = ovn.start_central(m)
    ch = ovn.start_chassis(m, central, "ch1", tso=False, dummy=True)
    ovn.start_controller(m, central, ch)
    # the anchor VM, on its own switch, and the new VMs' namespaces (not plugged yet)
    central.nbctl(
        "ls-add",
        "nvbanc",
        "--",
        "lsp-add",
        "nvbanc",
        "nvba",
        "--",
        "lsp-set-addresses",
        "nvba",
        "0a:fb:fa:00:00:01 10.251.250.10",
    )
    ovn.add_vm(m, ch, "oa", "nvba", "0a:fb:fa:00:00:01", "10.251.250.10/24", None, True)
    central.nbctl("--wait=hv", "sync")
    dbs = [central.procs["ovsdb-nb"], central.procs["ovsdb-sb"], ch.procs["ovsdb"]]
    comps = {
        "ovs-vswitchd": [ch.procs["vswitchd"].pid],
        "ovn-controller": [ch.procs["controller"].pid],
        "ovn-northd": [central.procs["northd"].pid],
        "ovsdb": [p.pid for p in dbs],
    }
    host = comps["ovs-vswitchd"] + comps["ovn-controller"]
    out: dict[str, float] = {}
    with bench_lock(), PeakRss(comps) as peak:
        rss0 = rss_kb(host)
        sampler = CpuSampler(comps)
        before = sampler.sample()
        t0 = time.monotonic()
        for cmd in ovn_nb_commands(scale.ports, scale.networks):
            central.nbctl(*cmd, timeout=600)
        t_nb = time.monotonic()
        central.nbctl("--wait=sb", "sync", timeout=1200)
        t_sb = time.monotonic()
        local = scale.local_ports()
        for start in range(0, len(local), 1000):
            cmd = []
            for p in local[start : start + 1000]:
                cmd += [
                    "--",
                    "add-port",
                    ovn.BRIDGE,
                    f"nvbp{p}",
                    "--",
                    "set",
                    "Interface",
                    f"nvbp{p}",
                    "type=dummy",
                    f"external_ids:iface-id=nvbp{p}",
                ]
            ch.vsctl(*cmd[1:], timeout=600)
        central.nbctl("--wait=hv", "sync", timeout=1800)
        wait_for("every port up", lambda: _lsp_up(central) >= len(local) + 1, 1800, 0.5)
        t_inst = time.monotonic()
        after = sampler.sample()
        rss1 = rss_kb(host)
    out |= _times(t0, t_nb, t_sb, t_inst, rss0, rss1, len(local)) | peak.figures()
    out |= _cpu_seconds(sampler, before, after)
    out["ovs_flows"] = float(len(ch.appctl("bridge/dump-flows", ovn.BRIDGE).splitlines()))
    lat = []
    for i in range(latency_runs):
        ns, dev, name = f"nvb-on{i}", f"nvbon{i}", f"nvbnew{i}"
        mac, ip = f"0a:fb:fa:00:01:{i:02x}", f"10.251.250.{50 + i}"
        new_vm(
            m, ns, ch.netns, dev, mac, f"{ip}/24", "10.251.250.10", "0a:fb:fa:00:00:01", "nvb-oa"
        )
        run(in_netns(ns, ["ethtool", "-K", "eth0", "tx", "off"]))

        def create(name: str = name, dev: str = dev, mac: str = mac, ip: str = ip) -> None:
            central.nbctl("lsp-add", "nvbanc", name, "--", "lsp-set-addresses", name, f"{mac} {ip}")
            ch.vsctl(
                "add-port",
                ovn.BRIDGE,
                dev,
                "--",
                "set",
                "Interface",
                dev,
                f"external_ids:iface-id={name}",
            )

        lat.append(port_latency(m, ns, "10.251.250.10", create))
    if lat:
        out["port_to_traffic_ms"] = sorted(lat)[len(lat) // 2]
    return out


class PeakRss:
    """Peak RSS (MB) per component, sampled every second by a thread while in use."""

    def __init__(self, components: dict[str, list[int]]) -> None:
        self.components = components
        self.peak: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(1.0):
            for name, pids in self.components.items():
                mb = rss_kb(pids) / 1024
                if mb > self.peak.get(name, 0.0):
                    self.peak[name] = mb
                    log.debug("peak RSS %s: %.0f MB", name, mb)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        log.info("peak RSS (MB): %s", ", ".join(f"{k} {v:.0f}" for k, v in self.peak.items()))

    def figures(self) -> dict[str, float]:
        return {f"peak_rss_mb_{k}": v for k, v in self.peak.items()}


def _cpu_seconds(sampler: CpuSampler, before: Sample, after: Sample) -> dict[str, float]:
    """CPU seconds each component used between two samples."""
    seconds = after[0] - before[0]
    pct = sampler.percent(before, after)
    return {f"cpu_s_{k}": v * seconds / 100 for k, v in pct.items() if k in sampler.components}


def _times(
    t0: float, t_nb: float, t_compiled: float, t_inst: float, rss0: int, rss1: int, ports: int
) -> dict[str, float]:
    return {
        "nb_write_s": t_nb - t0,
        "compile_s": t_compiled - t_nb,
        "compile_install_s": t_inst - t_nb,
        "total_s": t_inst - t0,
        "rss_before_mb": rss0 / 1024,
        "rss_after_mb": rss1 / 1024,
        "rss_mb_per_1k_ports": (rss1 - rss0) / 1024 / (ports / 1000),
    }


# ------------------------------------------------------------------ netvirt


def _bulk(client: Any, kind: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for start in range(0, len(items), API_CHUNK):
        body = {kind: items[start : start + API_CHUNK]}
        path = kind.replace("_", "-")
        out += client.request("POST", f"/v2.0/{path}", json=body)[kind]
    return out


def netvirt_objects(client: Any, scale: Scale, host: str) -> list[str]:
    """Create everything through the API (bulk); the ports' ids in creation order."""
    ports, networks = scale.ports, scale.networks
    nets = _bulk(
        client,
        "networks",
        [{"name": f"nvbn{n}", "port_security_enabled": True} for n in range(networks)],
    )
    subs = _bulk(
        client,
        "subnets",
        [
            {
                "network_id": net["id"],
                "cidr": str(subnet(n, "10.253.0.0/16")),
                "ip_version": 4,
                "name": f"nvbn{n}-subnet",
            }
            for n, net in enumerate(nets)
        ],
    )
    groups = _bulk(client, "security_groups", [{"name": f"nvbsg{g}"} for g in range(GROUPS)])
    rules: list[dict[str, Any]] = []
    for sg in groups:
        base = {"security_group_id": sg["id"], "direction": "ingress", "ethertype": "IPv4"}
        rules += [
            base | {"protocol": "tcp", "port_range_min": 22, "port_range_max": 22},
            base | {"protocol": "icmp"},
            base | {"remote_group_id": sg["id"]},
        ]
    _bulk(client, "security_group_rules", rules)
    items = [
        {
            "network_id": nets[n]["id"],
            "name": f"nvbp{p}",
            "device_owner": "compute:nvb",
            "fixed_ips": [{"subnet_id": subs[n]["id"]}],
            "security_groups": [groups[p % GROUPS]["id"]],
            "binding:host_id": host if scale.local(p) else "nvbelsewhere",
        }
        for p, (n, _) in enumerate(ports_of(ports, networks))
    ]
    return [p["id"] for p in _bulk(client, "ports", items)]


def host_token(db_path: Path, host: str) -> str:
    """A host token minted in the lab's store, as ``netvirt lab`` does for its hosts (the
    API mints only admin and member tokens)."""
    from netvirt.northbound import identity
    from netvirt.northbound.context import Context
    from netvirt.northbound.db import Database

    database = Database(f"sqlite:///{db_path}")
    try:
        with database.write(bump=False) as session:
            return str(
                identity.create_token(session, Context.admin(), "admin", "host", host)["token"]
            )
    finally:
        database.dispose()


def _status(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def netvirt_run(m: Machine, scale: Scale, latency_runs: int) -> dict[str, float]:
    scope = m.scope()
    try:
        with nvlab.lab(scope, "cp", results.NETVIRT, keep_db=True) as name:
            return _netvirt_run(scope, name, scale, latency_runs)
    finally:
        scope.close()


def _netvirt_run(m: Machine, name: str, scale: Scale, latency_runs: int) -> dict[str, float]:
    from netvirt.api.client import NetvirtClient

    state = nvlab.lab_state(name)
    client = NetvirtClient(state["url"], state["admin_token"], timeout=600)
    host = "nvbcp1"
    token = host_token(Path(state["dir"]) / "netvirt.db", host)
    status_path, plugs_path = m.workdir / "nvagent.status", m.workdir / "nvagent.plugs"
    for p in (status_path, plugs_path):
        p.unlink(missing_ok=True)
    agent = m.start(
        "nvagent",
        [
            sys.executable,
            NVAGENT,
            "--url",
            state["url"],
            "--name",
            host,
            "--plugs",
            str(plugs_path),
            "--status",
            str(status_path),
        ],
        env={"NETVIRT_HOST_TOKEN": token},
    )
    wait_for("nvagent first step", lambda: _status(status_path).get("steps", 0) > 1, 60)
    comps = nvlab.components(name)
    comps["netvirt agent (scale host)"] = [agent.pid]
    out: dict[str, float] = {}
    with bench_lock(), PeakRss(comps) as peak:
        rss0 = rss_kb([agent.pid])
        sampler = CpuSampler(comps)
        before = sampler.sample()
        t0 = time.monotonic()
        ids = netvirt_objects(client, scale, host)
        t_nb = time.monotonic()
        nb_gen = client.status()["nb_generation"]
        plugs_tmp = plugs_path.with_suffix(".tmp")
        plugs = [[f"nvbp{i}", pid] for i, pid in enumerate(ids) if scale.local(i)]
        plugs_tmp.write_text(json.dumps(plugs))
        plugs_tmp.rename(plugs_path)
        compiled: list[float] = []

        def installed() -> bool:
            if not agent.alive():
                raise BenchError(f"nvagent exited: {agent.output()[-500:]}")
            if not compiled and client.status()["compiled_generation"] >= nb_gen:
                compiled.append(time.monotonic())
            st = _status(status_path)
            return bool(
                st.get("installed_generation", -1) >= nb_gen and st.get("claimed", 0) >= len(plugs)
            )

        wait_for(f"{len(plugs)} ports installed", installed, 3600, 0.5)
        t_inst = time.monotonic()
        after = sampler.sample()
        rss1 = rss_kb([agent.pid])
    t_compiled = compiled[0] if compiled else t_inst
    out |= _times(t0, t_nb, t_compiled, t_inst, rss0, rss1, len(plugs)) | peak.figures()
    out |= _cpu_seconds(sampler, before, after)
    out["rules"] = float(_status(status_path).get("rules", 0))
    out["port_to_traffic_ms"] = _netvirt_latency(m, name, client, state, latency_runs)
    client.close()
    return out


def _netvirt_latency(m: Machine, name: str, client: Any, state: dict[str, Any], runs: int) -> float:
    anchor = state["vms"]["nvba"]
    host = state["hosts"]["hv1"]
    lat = []
    for i in range(runs):
        ns, dev = f"nvb-nn{i}", f"nvbnn{i}"
        mac, ip = f"0a:fb:fe:00:01:{i:02x}", f"10.252.1.{50 + i}"
        new_vm(
            m, ns, host["netns"], dev, mac, f"{ip}/24", anchor["ip"], anchor["mac"], anchor["netns"]
        )

        def create(dev: str = dev, mac: str = mac, ip: str = ip) -> None:
            port = client.create_port(
                network_id=anchor["network_id"],
                mac_address=mac,
                device_owner="compute:nvb",
                fixed_ips=[{"ip_address": ip}],
                port_security_enabled=False,
                project_id=state["project_ids"]["bench"],
                **{"binding:host_id": "hv1"},
            )
            plug = Path(host["iface_dir"])
            (plug / f".{dev}.tmp").write_text(port["id"] + "\n")
            (plug / f".{dev}.tmp").rename(plug / dev)

        lat.append(port_latency(m, ns, anchor["ip"], create))
    return sorted(lat)[len(lat) // 2] if lat else float("nan")


# ------------------------------------------------------------------ all of it


def run_all(
    m: Machine,
    backends: tuple[str, ...],
    scales: tuple[tuple[int, int], ...],
    runs: int,
    host_ports: int = 1000,
) -> tuple[list[Series], list[str]]:
    todo: list[tuple[str, Callable[[Machine, Scale, int], dict[str, float]]]] = []
    if set(backends) & set(results.OVN_BACKENDS):
        todo.append((results.OVN, ovn_run))
    if set(backends) & set(results.NETVIRT_BACKENDS):
        todo.append((results.NETVIRT, netvirt_run))
    out: list[Series] = []
    notes: list[str] = []
    for ports, networks in scales:
        topology = scale_name(ports)
        for backend, fn in todo:
            scale = Scale(ports, networks, min(host_ports, ports))
            note = f"{ports} ports over {networks} networks, {len(scale.local_ports())} on the host"
            series = Series(backend, topology, "control", note=note)
            out.append(series)
            log.info("== control plane: %s, %d ports over %d networks", backend, ports, networks)
            for i in range(runs):
                try:
                    figures = fn(m, scale, 3)
                except Exception as exc:  # record and go on with the other backends
                    log.exception("%s %s run %d failed", backend, topology, i + 1)
                    series.error = str(exc)[:500]
                    break
                log.info(
                    "%s %s run %d: %s",
                    backend,
                    topology,
                    i + 1,
                    ", ".join(f"{k}={v:.3g}" for k, v in figures.items()),
                )
                series.runs.append(figures)
            lat = Series(backend, topology, "port_to_traffic", error=series.error)
            lat.runs = [
                {"port_to_traffic_ms": r["port_to_traffic_ms"]}
                for r in series.runs
                if "port_to_traffic_ms" in r
            ]
            out.append(lat)
    return out, notes
