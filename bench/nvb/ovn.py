"""OVN on Open vSwitch with the userspace datapath (``datapath_type=netdev``).

This kernel has no openvswitch module, so OVS forwards in ovs-vswitchd
itself. Every daemon is started here, in the foreground (so the harness owns
its pid), with private run/db/log dirs under ``/tmp/nvb-ovn-*``; a system-wide
OVS, if one runs, is never contacted. Each chassis is a namespace
(``nvb-ch1``, ``nvb-ch2``) running its own ovsdb-server + ovs-vswitchd +
ovn-controller, so its integration bridge (``nvbint``, set through
``external_ids:ovn-bridge``) and tap devices stay inside it. The central part
(NB and SB ovsdb-servers, ovn-northd) is shared by the chassis through unix
sockets.

Variants: ``ovn`` (veth TX checksum offload off in the VM namespaces: without
it TCP hangs on bad checksums) and ``ovn-tso``
(``other_config:userspace-tso-enable=true``, default veth offloads).

Cross-host (``xhost``): two chassis namespaces joined by a veth underlay
(MTU 9000) that sits on a netdev bridge ``nvbphy`` holding the chassis's
underlay address: OVS's userspace tunnelling (Geneve encap/decap in
ovs-vswitchd, routes and ARP looked up by OVS itself), the setup OVS
documents for netdev datapaths.

ovs-vswitchd 3.1's userspace conntrack aborts (``ovs_assert`` in
``conn_update_state``) when a TCP 4-tuple comes back while its old entry is
still tracked and has an all-zero SNAT twin, which OVN's ``ct_commit`` adds to
every stateful-ACL connection on a datapath with ``ct_zero_snat``. The
connection-rate client therefore never reuses a 4-tuple within 150 s
(``connrate.py --fresh-tuples``, for every backend), and a run after a crash
fails naming the daemon and its log's EMER line (``check_daemons``), not with
"no connection completed".
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from nvb import results
from nvb.system import BenchError, Machine, Proc, in_netns, run, wait_for
from nvb.workloads import Node, Target

WORK = Path("/tmp")
BRIDGE = "nvbint"


@dataclass
class Central:
    """NB + SB ovsdb-servers and ovn-northd."""

    dir: Path
    procs: dict[str, Proc] = field(default_factory=dict)
    daemon: str = ""  # the ovn-nbctl daemon's control socket, once started

    @property
    def nb(self) -> str:
        return f"unix:{self.dir}/nb.sock"

    @property
    def sb(self) -> str:
        return f"unix:{self.dir}/sb.sock"

    def nbctl(self, *args: str, timeout: float = 120.0) -> str:
        """ovn-nbctl through its daemon (one NB connection kept, as networking-ovn's IDL)."""
        if self.daemon:
            argv = ["ovn-nbctl", f"--timeout={int(timeout)}", *args]
            env = {"OVN_NB_DAEMON": self.daemon}
            return run(argv, timeout=timeout + 10, env=env).stdout
        argv = ["ovn-nbctl", f"--db={self.nb}", f"--timeout={int(timeout)}", *args]
        return run(argv, timeout=timeout + 10).stdout

    def sbctl(self, *args: str) -> str:
        return run(["ovn-sbctl", f"--db={self.sb}", "--timeout=30", *args], timeout=40).stdout


@dataclass
class Chassis:
    """One OVS instance + ovn-controller in a namespace."""

    name: str
    netns: str
    dir: Path
    encap_ip: str
    procs: dict[str, Proc] = field(default_factory=dict)

    def vsctl(self, *args: str, timeout: float = 60.0) -> str:
        argv = ["ovs-vsctl", f"--db=unix:{self.dir}/db.sock", f"--timeout={int(timeout)}", *args]
        return run(argv, timeout=timeout + 10).stdout

    def appctl(self, *args: str) -> str:
        target = str(self.dir / "ovs-vswitchd.ctl")
        return run(["ovs-appctl", "-t", target, *args], check=False).stdout

    def env(self) -> dict[str, str]:
        d = str(self.dir)
        return {"OVS_RUNDIR": d, "OVS_LOGDIR": d, "OVS_DBDIR": d, "OVN_RUNDIR": d, "OVN_LOGDIR": d}


def _fresh_dir(name: str) -> Path:
    d = WORK / f"nvb-ovn-{name}"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    return d


def _remove_dir(m: Machine, d: Path) -> None:
    """Keep the daemons' logs in the work dir, then remove their private dir."""
    keep = m.workdir / d.name
    keep.mkdir(parents=True, exist_ok=True)
    for log_file in d.glob("*.log"):
        shutil.copy2(log_file, keep / log_file.name)
    shutil.rmtree(d, ignore_errors=True)


def start_central(m: Machine) -> Central:
    c = Central(_fresh_dir("central"))
    m.cleanup.add("ovn central dir", partial(_remove_dir, m, c.dir))
    for db, schema in (("nb", "ovn-nb"), ("sb", "ovn-sb")):
        run(["ovsdb-tool", "create", f"{c.dir}/{db}.db", f"/usr/share/ovn/{schema}.ovsschema"])
        c.procs[f"ovsdb-{db}"] = m.start(
            f"ovn-ovsdb-{db}",
            [
                "ovsdb-server",
                f"{c.dir}/{db}.db",
                f"--remote=punix:{c.dir}/{db}.sock",
                f"--unixctl={c.dir}/ovsdb-{db}.ctl",
                f"--log-file={c.dir}/ovsdb-{db}.log",
                "--pidfile=" + f"{c.dir}/ovsdb-{db}.pid",
            ],
        )
    wait_for(
        "NB/SB sockets", lambda: (c.dir / "nb.sock").exists() and (c.dir / "sb.sock").exists(), 20
    )
    c.nbctl("--no-wait", "init")
    c.sbctl("init")
    c.procs["northd"] = m.start(
        "ovn-northd",
        [
            "ovn-northd",
            f"--ovnnb-db={c.nb}",
            f"--ovnsb-db={c.sb}",
            f"--unixctl={c.dir}/northd.ctl",
            f"--log-file={c.dir}/northd.log",
            f"--pidfile={c.dir}/northd.pid",
        ],
    )
    _nbctl_daemon(m, c)
    return c


def _nbctl_daemon(m: Machine, c: Central) -> None:
    """``ovn-nbctl --detach``: it prints its socket; stopped by its pidfile's pid at the end."""
    pidfile = c.dir / "nbctl.pid"
    argv = ["ovn-nbctl", f"--db={c.nb}", "--detach", f"--pidfile={pidfile}"]
    argv.append(f"--log-file={c.dir}/nbctl.log")
    c.daemon = run(argv, env={"OVN_RUNDIR": str(c.dir)}).stdout.strip()

    def stop() -> None:
        with contextlib.suppress(OSError, ValueError):
            pid = int(pidfile.read_text())
            if "ovn-nbctl" in Path(f"/proc/{pid}/cmdline").read_text():
                os.kill(pid, signal.SIGTERM)

    m.cleanup.add("ovn-nbctl daemon", stop)


def start_chassis(
    m: Machine,
    central: Central,
    name: str,
    *,
    tso: bool,
    encap_ip: str = "127.0.0.1",
    dummy: bool = False,
    netns: str | None = None,
) -> Chassis:
    """ovsdb-server + ovs-vswitchd + ovn-controller inside namespace ``nvb-<name>``."""
    ns = netns or m.netns(f"nvb-{name}")
    ch = Chassis(name, ns, _fresh_dir(name), encap_ip)
    m.cleanup.add(f"{name} dir", partial(_remove_dir, m, ch.dir))
    d = ch.dir
    run(["ovsdb-tool", "create", f"{d}/conf.db", "/usr/share/openvswitch/vswitch.ovsschema"])
    ch.procs["ovsdb"] = m.start(
        f"{name}-ovsdb",
        in_netns(
            ns,
            [
                "ovsdb-server",
                f"{d}/conf.db",
                f"--remote=punix:{d}/db.sock",
                "--remote=db:Open_vSwitch,Open_vSwitch,manager_options",
                f"--unixctl={d}/ovsdb.ctl",
                f"--log-file={d}/ovsdb.log",
                f"--pidfile={d}/ovsdb.pid",
            ],
        ),
        env=ch.env(),
    )
    wait_for(f"{name} db.sock", lambda: (d / "db.sock").exists(), 20)
    ch.vsctl("--no-wait", "init")
    if tso:
        ch.vsctl("--no-wait", "set", "Open_vSwitch", ".", "other_config:userspace-tso-enable=true")
    argv = [
        "ovs-vswitchd",
        f"unix:{d}/db.sock",
        f"--unixctl={d}/ovs-vswitchd.ctl",
        f"--log-file={d}/ovs-vswitchd.log",
        f"--pidfile={d}/ovs-vswitchd.pid",
    ]
    if dummy:
        argv.append("--enable-dummy")
    ch.procs["vswitchd"] = m.start(f"{name}-vswitchd", in_netns(ns, argv), env=ch.env())
    ch.vsctl(
        "set",
        "Open_vSwitch",
        ".",
        f"external_ids:system-id={name}",
        f"external_ids:ovn-remote={central.sb}",
        "external_ids:ovn-encap-type=geneve",
        f"external_ids:ovn-encap-ip={encap_ip}",
        f"external_ids:ovn-bridge={BRIDGE}",
        "external_ids:ovn-bridge-datapath-type=netdev",
    )
    return ch


def start_controller(m: Machine, central: Central, ch: Chassis) -> None:
    d = ch.dir
    ch.procs["controller"] = m.start(
        f"{ch.name}-controller",
        in_netns(
            ch.netns,
            [
                "ovn-controller",
                f"unix:{d}/db.sock",
                f"--log-file={d}/ovn-controller.log",
                f"--pidfile={d}/ovn-controller.pid",
            ],
        ),
        env=ch.env(),
    )

    def ready() -> bool:
        for proc in ch.procs.values():
            if not proc.alive():
                raise BenchError(f"{proc.name} exited: {proc.output()[-300:]}")
        chassis = central.sbctl("--bare", "--columns=name", "list", "Chassis").split()
        return ch.name in chassis and BRIDGE in ch.vsctl("list-br").split()

    wait_for(f"{ch.name} registered", ready, 30, 0.2)


# ------------------------------------------------------------------ VMs and logical topology


def add_vm(
    m: Machine, ch: Chassis, vm: str, lsp: str, mac: str, cidr: str, gw: str | None, tx_off: bool
) -> str:
    """A VM namespace whose eth0 peer sits on the chassis's integration bridge."""
    ns = m.netns(f"nvb-{vm}")
    dev = f"nvb{vm}"[:15]
    m.veth("eth0", ns, dev, ch.netns)
    run(["ip", "-n", ns, "link", "set", "eth0", "address", mac])
    run(["ip", "-n", ns, "addr", "add", cidr, "dev", "eth0"])
    if gw:
        run(["ip", "-n", ns, "route", "add", "default", "via", gw])
    if tx_off:
        run(in_netns(ns, ["ethtool", "-K", "eth0", "tx", "off"]))
    ch.vsctl("add-port", BRIDGE, dev, "--", "set", "Interface", dev, f"external_ids:iface-id={lsp}")
    return ns


def _lsp(ls: str, name: str, mac: str, ip: str, secure: bool = False) -> list[str]:
    cmd = ["--", "lsp-add", ls, name, "--", "lsp-set-addresses", name, f"{mac} {ip}"]
    if secure:
        cmd += ["--", "lsp-set-port-security", name, f"{mac} {ip}"]
    return cmd


def _router_port(lr: str, ls: str, mac: str, cidr: str) -> list[str]:
    lrp, lsp = f"{lr}-{ls}", f"{ls}-{lr}"
    return [
        "--",
        "lrp-add",
        lr,
        lrp,
        mac,
        cidr,
        "--",
        "lsp-add",
        ls,
        lsp,
        "--",
        "lsp-set-type",
        lsp,
        "router",
        "--",
        "lsp-set-addresses",
        lsp,
        "router",
        "--",
        "lsp-set-options",
        lsp,
        f"router-port={lrp}",
    ]


SG_ACLS = [
    ("from-lport", "1002", "inport == @nvbpg && ip4", "allow-related"),
    ("to-lport", "1002", "outport == @nvbpg && ip4 && icmp4", "allow-related"),
    ("to-lport", "1002", "outport == @nvbpg && ip4 && tcp.dst == 5201", "allow-related"),
    ("to-lport", "1002", "outport == @nvbpg && ip4 && udp.dst == 5201", "allow-related"),
    ("to-lport", "1002", "outport == @nvbpg && ip4 && tcp.dst == 5301", "allow-related"),
    ("from-lport", "1001", "inport == @nvbpg && ip", "drop"),
    ("to-lport", "1001", "outport == @nvbpg && ip", "drop"),
]

MAC_C, MAC_S = "0a:fb:01:00:00:0b", "0a:fb:02:00:00:0c"


def logical(central: Central, topology: str, ch_name: str) -> tuple[str, str, str | None, str]:
    """Create the topology's NB objects; returns client cidr, server cidr, gateways, server ip."""
    cmd: list[str] = ["--", "ls-add", "nvbls1"]
    if topology in ("l2", "xhost"):
        cmd += _lsp("nvbls1", "nvbc", MAC_C, "10.251.1.11")
        cmd += _lsp("nvbls1", "nvbs", MAC_S, "10.251.1.12")
        central.nbctl(*cmd[1:])
        return "10.251.1.11/24", "10.251.1.12/24", None, "10.251.1.12"
    cmd += ["--", "ls-add", "nvbls2", "--", "lr-add", "nvblr"]
    cmd += _router_port("nvblr", "nvbls1", "02:fb:01:00:00:01", "10.251.1.1/24")
    cmd += _router_port("nvblr", "nvbls2", "02:fb:02:00:00:01", "10.251.2.1/24")
    if topology == "l3":
        cmd += _lsp("nvbls1", "nvbc", MAC_C, "10.251.1.11")
        cmd += _lsp("nvbls2", "nvbs", MAC_S, "10.251.2.12")
        central.nbctl(*cmd[1:])
        return "10.251.1.11/24", "10.251.2.12/24", "10.251.1.1", "10.251.2.12"
    # sg: stateful port-group ACLs on the client (as networking-ovn writes a security
    # group), a gateway port on the "external" switch and SNAT of the client's subnet
    cmd += _lsp("nvbls1", "nvbc", MAC_C, "10.251.1.11", secure=True)
    cmd += ["--", "ls-add", "nvbext"]
    cmd += _router_port("nvblr", "nvbext", "02:fb:64:00:00:01", "10.251.100.1/24")
    cmd += ["--", "lrp-set-gateway-chassis", "nvblr-nvbext", ch_name, "10"]
    cmd += _lsp("nvbext", "nvbs", MAC_S, "10.251.100.12")
    cmd += ["--", "lr-nat-add", "nvblr", "snat", "10.251.100.1", "10.251.1.0/24"]
    cmd += ["--", "pg-add", "nvbpg", "nvbc"]
    for direction, prio, match, action in SG_ACLS:
        cmd += ["--", "acl-add", "nvbpg", direction, prio, match, action]
    central.nbctl(*cmd[1:])
    return "10.251.1.11/24", "10.251.100.12/24", "10.251.1.1", "10.251.100.12"


# ------------------------------------------------------------------ topologies


@contextmanager
def setup(m: Machine, backend: str, topology: str) -> Iterator[Target]:
    scope = m.scope()
    try:
        yield _build(scope, backend, topology)
    finally:
        scope.close()


def _build(m: Machine, backend: str, topology: str) -> Target:
    tso = backend == results.OVN_TSO
    central = start_central(m)
    if topology == "xhost":
        chassis = _two_chassis(m, central, tso)
    else:
        chassis = [start_chassis(m, central, "ch1", tso=tso)]
    for ch in chassis:
        start_controller(m, central, ch)
    c_cidr, s_cidr, gw, server_ip = logical(central, topology, chassis[0].name)
    s_gw = None if topology in ("l2", "xhost", "sg") else "10.251.2.1"
    add_vm(m, chassis[0], "oc", "nvbc", MAC_C, c_cidr, gw, not tso)
    add_vm(m, chassis[-1], "os", "nvbs", MAC_S, s_cidr, s_gw, not tso)
    central.nbctl("--wait=hv", "sync")
    client, server = (
        Node("nvb-oc", ["ip", "netns", "exec", "nvb-oc"]),
        Node("nvb-os", ["ip", "netns", "exec", "nvb-os"]),
    )
    _ping_ready(client, server_ip)

    def components() -> dict[str, list[int]]:
        check_daemons(chassis)  # called before every timed run
        out: dict[str, list[int]] = {"ovs-vswitchd": [], "ovn-controller": [], "ovsdb": []}
        for ch in chassis:
            out["ovs-vswitchd"].append(ch.procs["vswitchd"].pid)
            out["ovn-controller"].append(ch.procs["controller"].pid)
            out["ovsdb"].append(ch.procs["ovsdb"].pid)
        out["ovsdb"] += [central.procs["ovsdb-nb"].pid, central.procs["ovsdb-sb"].pid]
        out["ovn-northd"] = [central.procs["northd"].pid]
        return out

    note = "userspace-tso-enable=true" if tso else "veth tx checksum offload off in the VMs"
    if topology == "xhost":
        note += "; 2 chassis namespaces, Geneve by OVS userspace tunnelling over a veth underlay"
    return Target(backend, topology, client, server, server_ip, components, note=note)


DAEMON_LOGS = {"vswitchd": "ovs-vswitchd.log", "controller": "ovn-controller.log"}


def check_daemons(chassis: list[Chassis]) -> None:
    """Raise a BenchError naming a chassis daemon that has exited, and why.

    Without it a crashed ovs-vswitchd shows up only as runs that complete no
    connection at all."""
    for ch in chassis:
        for key, log_name in DAEMON_LOGS.items():
            proc = ch.procs.get(key)
            if proc is not None and not proc.alive():
                reason = exit_reason(ch.dir / log_name) or proc.output()[-300:].strip()
                raise BenchError(f"{proc.name} exited: {reason or 'no log line'}")


def exit_reason(log_file: Path) -> str:
    """The last EMER line of an OVS/OVN daemon's log (a failed ``ovs_assert``, a fatal
    signal), without its timestamp and sequence number; "" when there is none."""
    try:
        text = log_file.read_text(errors="replace")
    except OSError:
        return ""
    for line in reversed(text.splitlines()):
        _, sep, rest = line.partition("|EMER|")
        if sep:
            return rest.strip()
    return ""


def _two_chassis(m: Machine, central: Central, tso: bool) -> list[Chassis]:
    out = []
    ns1, ns2 = m.netns("nvb-ch1"), m.netns("nvb-ch2")
    m.veth("nvbul", ns1, "nvbul", ns2, mtu=9000)
    for i, ns in enumerate((ns1, ns2)):
        ip = f"10.251.200.{i + 1}"
        ch = start_chassis(m, central, f"ch{i + 1}", tso=tso, encap_ip=ip, netns=ns)
        ch.vsctl(
            "add-br",
            "nvbphy",
            "--",
            "set",
            "Bridge",
            "nvbphy",
            "datapath_type=netdev",
            "--",
            "add-port",
            "nvbphy",
            "nvbul",
            "--",
            "set",
            "Interface",
            "nvbphy",
            "mtu_request=9000",
        )
        wait_for("nvbphy tap", partial(_has_link, ns, "nvbphy"), 20)
        run(["ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "nvbphy"])
        run(["ip", "-n", ns, "link", "set", "nvbphy", "up"])
        out.append(ch)
    return out


def _has_link(ns: str, dev: str) -> bool:
    return run(["ip", "-n", ns, "link", "show", dev], check=False).returncode == 0


def _ping_ready(client: Node, ip: str, timeout: float = 20.0) -> None:
    def ok() -> bool:
        argv = client.argv("ping", "-n", "-c", "1", "-W", "1", ip)
        return run(argv, check=False, timeout=5).returncode == 0

    wait_for(f"ping {ip} from {client.name}", ok, timeout, 0.2)
