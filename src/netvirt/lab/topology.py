"""The lab's topology file: what ``netvirt lab up`` builds, as validated data.

A topology is YAML (see ``examples/quickstart.yaml`` and docs/lab.md). It is
parsed in two passes so that every error names the field it is about:

1. **shape** — pydantic models with ``extra="forbid"`` check each object on
   its own (types, ranges, name syntax, unknown keys);
2. **references** — :func:`cross_check` checks what refers to what (a VM's
   host, project, network and groups; routers' networks; LB members; checks'
   endpoints) and a few rules the platform would refuse later anyway
   (overlapping subnets behind one router, an external network without a
   gateway host).

All errors of both passes are collected into one :class:`TopologyError`,
``path: message`` per line (``vms[2].host: unknown host 'hv9' …``), before
anything is built: a bad file never leaves half a lab behind.

Names are short on purpose: every node becomes a namespace and interface
names derived from them must fit Linux's 15 characters (see ``net.Names``).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Generator, Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

NODE_NAME_MAX = 12
NODE_RE = re.compile(rf"^[a-z][a-z0-9-]{{0,{NODE_NAME_MAX - 1}}}$")
LAB_RE = re.compile(r"^[a-z][a-z0-9]{0,7}$")
OBJ_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
RESERVED_NODES = frozenset({"ul", "ext", "external", "underlay"})
EXTERNAL_ALIASES = ("ext", "external")
SERVICE_KINDS = ("http",)
MAX_HOSTS = 32
MAX_VMS = 64


class TopologyError(ValueError):
    """A topology file that cannot be built; ``problems`` are ``(path, message)``."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {path or '(top level)'}: {msg}" for path, msg in problems)
        super().__init__(f"{source}: invalid topology\n{lines}")


def _pattern(regex: re.Pattern[str], what: str) -> AfterValidator:
    def check(value: str) -> str:
        if not regex.fullmatch(value):
            raise ValueError(f"{value!r} is not a valid {what} (pattern {regex.pattern})")
        return value

    return AfterValidator(check)


NodeName = Annotated[str, _pattern(NODE_RE, "node name")]
LabName = Annotated[str, _pattern(LAB_RE, "lab name")]
ObjName = Annotated[str, _pattern(OBJ_RE, "name")]
Port = Annotated[int, Field(ge=1, le=65535)]


def _v4_network(value: str) -> str:
    try:
        net = ipaddress.IPv4Network(value, strict=True)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not an IPv4 CIDR ({exc})") from None
    if net.prefixlen > 29:
        raise ValueError(f"{value!r} is too small (at most /29)")
    return str(net)


def _v4_address(value: str) -> str:
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise ValueError(f"{value!r} is not an IPv4 address") from None


V4Net = Annotated[str, AfterValidator(_v4_network)]
V4Addr = Annotated[str, AfterValidator(_v4_address)]


class Strict(BaseModel):
    """Unknown keys are errors: a typo must not silently build something else."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class Host(Strict):
    name: NodeName
    encap: Literal["geneve", "vxlan"] = "geneve"
    gateway: bool = False


class Underlay(Strict):
    cidr: V4Net = "10.254.0.0/24"
    mtu: int = Field(65535, ge=1280, le=65535)


class External(Strict):
    """The "Internet": a namespace holding the external subnet's gateway IP."""

    name: ObjName = "public"
    cidr: V4Net = "172.24.4.0/24"
    gateway_ip: V4Addr | None = None

    def gateway(self) -> str:
        """The namespace's address: ``gateway_ip`` or the subnet's first host."""
        return self.gateway_ip or str(next(ipaddress.IPv4Network(self.cidr).hosts()))


class Rule(Strict):
    direction: Literal["ingress", "egress"] = "ingress"
    protocol: Literal["tcp", "udp", "icmp", "any"] = "any"
    port: int | str | None = None
    remote_ip: str | None = None
    remote_group: ObjName | None = None
    ethertype: Literal["IPv4", "IPv6"] = "IPv4"

    @field_validator("port", mode="before")
    @classmethod
    def _port(cls, value: Any) -> Any:
        text = str(value)
        if value is None or re.fullmatch(r"\d{1,5}(-\d{1,5})?", text):
            return None if value is None else (int(text) if text.isdigit() else text)
        raise ValueError(f"{value!r} is not a port or a range such as 80-90")

    @field_validator("remote_ip")
    @classmethod
    def _cidr(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return str(ipaddress.ip_network(value, strict=False))
        except ValueError:
            raise ValueError(f"{value!r} is not an IP prefix") from None

    def port_range(self) -> tuple[int, int] | None:
        if self.port is None:
            return None
        if isinstance(self.port, int):
            return (self.port, self.port)
        low, high = (int(p) for p in self.port.split("-"))
        return (low, high)


class SecurityGroup(Strict):
    name: ObjName
    description: str = ""
    rules: list[Rule] = []


class Network(Strict):
    name: ObjName
    cidr: V4Net
    gateway_ip: V4Addr | None = None
    dns: list[V4Addr] = []
    mtu: int | None = Field(None, ge=576, le=9000)
    port_security: bool = True


class Router(Strict):
    name: ObjName
    networks: list[ObjName] = []
    gateway: bool = False
    snat: bool = True


class Project(Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.@-]{1,64}$")]
    networks: list[Network] = []
    routers: list[Router] = []
    security_groups: list[SecurityGroup] = []


class Service(Strict):
    kind: Literal["http"]
    port: Port = 80


def _service(value: Any) -> Any:
    """``http`` or ``http:8080`` in the YAML; a mapping works too."""
    if isinstance(value, str):
        kind, _, port = value.partition(":")
        if kind not in SERVICE_KINDS:
            raise ValueError(f"unknown service {value!r} (known: {', '.join(SERVICE_KINDS)})")
        if port and not port.isdigit():
            raise ValueError(f"service {value!r}: the port must be a number")
        return {"kind": kind, "port": int(port)} if port else {"kind": kind}
    return value


class Vm(Strict):
    name: NodeName
    host: NodeName
    network: ObjName
    project: str | None = None
    ip: V4Addr | None = None
    security_groups: list[ObjName] = ["default"]
    port_security: bool = True
    floating_ip: bool = False
    services: list[Annotated[Service, Field()]] = []

    @field_validator("services", mode="before")
    @classmethod
    def _services(cls, value: Any) -> Any:
        return [_service(v) for v in value] if isinstance(value, list) else value


class HealthMonitor(Strict):
    type: Literal["HTTP", "TCP", "PING"] = "HTTP"
    delay: int = Field(2, ge=1, le=300)
    timeout: int = Field(1, ge=1, le=300)
    retries: int = Field(2, ge=1, le=10)
    url_path: str = "/"


class LoadBalancer(Strict):
    name: ObjName
    network: ObjName
    members: list[NodeName] = Field(min_length=1)
    project: str | None = None
    vip: V4Addr | None = None
    port: Port = 80
    member_port: Port | None = None
    protocol: Literal["TCP", "HTTP"] = "TCP"
    algorithm: Literal["ROUND_ROBIN", "SOURCE_IP", "LEAST_CONNECTIONS"] = "ROUND_ROBIN"
    health_monitor: HealthMonitor | None = None


CHECK_KIND_RE = re.compile(r"^(ping|tcp:\d{1,5}|http(:\d{1,5})?)$")


class Check(Strict):
    """``from`` a VM or ``ext``; ``to`` a VM, ``VM:fip``, an LB name, ``ext`` or an IP."""

    src: str = Field(alias="from")
    to: str
    kind: str = "ping"
    expect: Literal["ok", "blocked"] = "ok"

    @field_validator("kind")
    @classmethod
    def _kind(cls, value: str) -> str:
        if not CHECK_KIND_RE.fullmatch(value):
            raise ValueError(f"{value!r} is not one of ping, tcp:PORT, http, http:PORT")
        return value

    def port(self) -> int | None:
        """The TCP port a ``tcp:``/``http`` check connects to (``None`` for ping)."""
        if self.kind == "ping":
            return None
        _, _, port = self.kind.partition(":")
        return int(port) if port else 80

    def label(self) -> str:
        return f"{self.src} → {self.to} {self.kind}"


StateBackend = Literal["memory", "redis", "redis-cluster"]
STATE_CHOICES: tuple[str, ...] = ("auto", "memory", "redis", "redis-cluster")


class Topology(Strict):
    name: LabName = "lab"
    state: Literal["auto", "memory", "redis", "redis-cluster"] = "auto"
    # the datapaths' policy when the state store cannot be reached (--state-fail)
    state_fail: Literal["closed", "open"] = "closed"
    # exact flows between a host's local ports served in the kernel (netvirt datapath
    # --offload, the default; false: --no-offload, every frame through user space)
    offload: bool = True
    # new TCP connections made in the kernel from their SYN (datapath --syn-templates);
    # unset: the datapaths' environment (NETVIRT_SYN_TEMPLATES) or their default (on)
    syn_templates: bool | None = None
    underlay: Underlay = Underlay()
    hosts: list[Host] = Field(min_length=1, max_length=MAX_HOSTS)
    external: External | None = None
    projects: list[Project] = Field(min_length=1)
    vms: list[Vm] = Field([], max_length=MAX_VMS)
    load_balancers: list[LoadBalancer] = []
    checks: list[Check] = []

    # ------------------------------------------------------------------ derived views

    def state_backend(self) -> StateBackend:
        """``auto``: Redis when NAT or LB state must be seen by more than one host.

        A connection through SNAT, a floating IP or an LB VIP is translated on
        the host where it enters and un-translated where its reply enters,
        which is another host (the gateway, the backend's host); both must
        see one conntrack/NAT table. ``redis-cluster`` is never chosen by
        ``auto``: it is asked for (a 3-node Redis Cluster, docs/stateless-nf.md).
        """
        if self.state != "auto":
            return self.state
        routed_out = any(r.gateway for p in self.projects for r in p.routers)
        if routed_out or self.load_balancers or any(vm.floating_ip for vm in self.vms):
            return "redis"
        return "memory"

    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)

    def vm(self, name: str) -> Vm:
        return next(v for v in self.vms if v.name == name)

    def project(self, name: str) -> Project:
        return next(p for p in self.projects if p.name == name)

    def vm_project(self, vm: Vm | LoadBalancer) -> str:
        """The VM's (or LB's) project; the only project when the topology has one."""
        return vm.project or self.projects[0].name

    def gateway_host(self) -> Host | None:
        return next((h for h in self.hosts if h.gateway), None)

    def gateway_hosts(self) -> list[Host]:
        """Every host with an uplink to the external network (scale-out gateways)."""
        return [h for h in self.hosts if h.gateway]

    def network(self, project: str, name: str) -> Network:
        return next(n for n in self.project(project).networks if n.name == name)


# ---------------------------------------------------------------------- references


def _dupes(names: Iterable[str]) -> Iterator[str]:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            yield name
        seen.add(name)


def _known(kind: str, value: str, names: Iterable[str]) -> str | None:
    pool = sorted(set(names))
    if value in pool:
        return None
    return f"unknown {kind} {value!r} (known: {', '.join(pool) or 'none'})"


def _check_hosts(topo: Topology) -> Iterator[tuple[str, str]]:
    nodes = [(f"hosts[{i}].name", h.name) for i, h in enumerate(topo.hosts)]
    nodes += [(f"vms[{i}].name", v.name) for i, v in enumerate(topo.vms)]
    seen: set[str] = set()
    for path, name in nodes:
        if name in RESERVED_NODES:
            yield path, f"{name!r} is reserved"
        elif name in seen:
            yield path, f"{name!r} is taken (hosts and VMs share one set of names)"
        seen.add(name)
    gateways = [h.name for h in topo.hosts if h.gateway]
    if topo.external is not None and not gateways:
        yield "hosts", "an external network needs a host with gateway: true"
    capacity = ipaddress.IPv4Network(topo.underlay.cidr).num_addresses - 12
    if len(topo.hosts) > capacity:
        yield "underlay.cidr", f"{topo.underlay.cidr} has room for {capacity} hosts only"


def _check_external(topo: Topology) -> Iterator[tuple[str, str]]:
    ext = topo.external
    if ext is None:
        return
    net = ipaddress.IPv4Network(ext.cidr)
    if ipaddress.IPv4Address(ext.gateway()) not in net:
        yield "external.gateway_ip", f"{ext.gateway_ip} is not in {ext.cidr}"


def _check_project(i: int, proj: Project, topo: Topology) -> Iterator[tuple[str, str]]:
    where = f"projects[{i}]"
    nets = {n.name: n for n in proj.networks}
    for kind, names in (
        ("networks", [n.name for n in proj.networks]),
        ("routers", [r.name for r in proj.routers]),
        ("security_groups", [g.name for g in proj.security_groups]),
    ):
        for dupe in _dupes(names):
            yield f"{where}.{kind}", f"{dupe!r} is defined twice"
    for j, net in enumerate(proj.networks):
        if net.gateway_ip and ipaddress.IPv4Address(net.gateway_ip) not in ipaddress.IPv4Network(
            net.cidr
        ):
            yield f"{where}.networks[{j}].gateway_ip", f"{net.gateway_ip} is not in {net.cidr}"
    attached: dict[str, str] = {}
    for j, router in enumerate(proj.routers):
        rwhere = f"{where}.routers[{j}]"
        if router.gateway and topo.external is None:
            yield f"{rwhere}.gateway", "needs an `external:` network in the topology"
        cidrs: list[ipaddress.IPv4Network] = []
        for k, net_name in enumerate(router.networks):
            if problem := _known("network", net_name, nets):
                yield f"{rwhere}.networks[{k}]", problem
                continue
            if net_name in attached:
                yield f"{rwhere}.networks[{k}]", f"{net_name!r} is already on {attached[net_name]}"
            attached[net_name] = router.name
            cidr = ipaddress.IPv4Network(nets[net_name].cidr)
            if any(cidr.overlaps(other) for other in cidrs):
                yield f"{rwhere}.networks[{k}]", f"{cidr} overlaps another network of the router"
            cidrs.append(cidr)
    groups = {g.name for g in proj.security_groups} | {"default"}
    for j, group in enumerate(proj.security_groups):
        if group.name == "default":
            yield f"{where}.security_groups[{j}].name", "'default' exists already; pick a name"
        for k, rule in enumerate(group.rules):
            rwhere = f"{where}.security_groups[{j}].rules[{k}]"
            yield from _check_rule(rwhere, rule, groups)


def _check_rule(where: str, rule: Rule, groups: set[str]) -> Iterator[tuple[str, str]]:
    if rule.remote_group and (problem := _known("security group", rule.remote_group, groups)):
        yield f"{where}.remote_group", problem
    if rule.remote_group and rule.remote_ip:
        yield where, "remote_ip and remote_group exclude each other"
    if rule.port is not None and rule.protocol not in ("tcp", "udp"):
        yield f"{where}.port", "a port needs protocol tcp or udp"
    span = rule.port_range()
    if span and not 1 <= span[0] <= span[1] <= 65535:
        yield f"{where}.port", f"{rule.port!r} is not a range within 1-65535"


def _check_vms(topo: Topology) -> Iterator[tuple[str, str]]:
    projects = {p.name: p for p in topo.projects}
    hosts = [h.name for h in topo.hosts]
    for i, vm in enumerate(topo.vms):
        where = f"vms[{i}]"
        if problem := _known("host", vm.host, hosts):
            yield f"{where}.host", problem
        proj = yield from _owner(where, vm.project, projects)
        if proj is None:
            continue
        nets = {n.name: n for n in proj.networks}
        if problem := _known("network", vm.network, nets):
            yield f"{where}.network", f"{problem} in project {proj.name!r}"
        elif vm.ip and (problem := _address_problem(vm.ip, nets[vm.network])):
            yield f"{where}.ip", problem
        groups = {g.name for g in proj.security_groups} | {"default"}
        for k, group in enumerate(vm.security_groups):
            if problem := _known("security group", group, groups):
                yield f"{where}.security_groups[{k}]", problem
        if vm.floating_ip and not _routed_out(proj, vm.network):
            yield (
                f"{where}.floating_ip",
                (f"network {vm.network!r} needs a router with gateway: true for a floating IP"),
            )
        for dupe in _dupes(str(s.port) for s in vm.services):
            yield f"{where}.services", f"port {dupe} is used twice"


def _address_problem(ip: str, network: Network) -> str | None:
    """Why a fixed address cannot be a VM's on ``network`` (None: it can)."""
    addr, cidr = ipaddress.IPv4Address(ip), ipaddress.IPv4Network(network.cidr)
    if addr not in cidr:
        return f"{ip} is not in {cidr}"
    if addr in (cidr.network_address, cidr.broadcast_address):
        return f"{ip} is the network or broadcast address of {cidr}"
    gateway = network.gateway_ip or str(next(cidr.hosts()))
    if ip == gateway:
        return f"{ip} is the gateway of {cidr}"
    return None


def _owner(
    where: str, name: str | None, projects: dict[str, Project]
) -> Generator[tuple[str, str], None, Project | None]:
    """Resolve a ``project:`` field (a generator helper: yields problems, returns the project)."""
    if name is None:
        if len(projects) == 1:
            return next(iter(projects.values()))
        yield f"{where}.project", "required when the topology has several projects"
        return None
    if problem := _known("project", name, projects):
        yield f"{where}.project", problem
        return None
    return projects[name]


def _routed_out(proj: Project, network: str) -> bool:
    return any(r.gateway and network in r.networks for r in proj.routers)


def _check_lbs(topo: Topology) -> Iterator[tuple[str, str]]:
    projects = {p.name: p for p in topo.projects}
    vms = {v.name: v for v in topo.vms}
    for dupe in _dupes(lb.name for lb in topo.load_balancers):
        yield "load_balancers", f"{dupe!r} is defined twice"
    for i, lb in enumerate(topo.load_balancers):
        where = f"load_balancers[{i}]"
        proj = yield from _owner(where, lb.project, projects)
        if proj is None:
            continue
        nets = {n.name: n for n in proj.networks}
        if problem := _known("network", lb.network, nets):
            yield f"{where}.network", problem
        elif lb.vip and ipaddress.IPv4Address(lb.vip) not in ipaddress.IPv4Network(
            nets[lb.network].cidr
        ):
            yield f"{where}.vip", f"{lb.vip} is not in {nets[lb.network].cidr}"
        for k, member in enumerate(lb.members):
            if problem := _known("VM", member, vms):
                yield f"{where}.members[{k}]", problem
            elif topo.vm_project(vms[member]) != proj.name:
                yield f"{where}.members[{k}]", f"{member!r} is not in project {proj.name!r}"


def endpoint_names(topo: Topology) -> set[str]:
    """Every name a check's ``to`` may use besides an IP address."""
    names = {v.name for v in topo.vms} | {lb.name for lb in topo.load_balancers}
    names |= {f"{v.name}:fip" for v in topo.vms if v.floating_ip}
    if topo.external is not None:
        names |= set(EXTERNAL_ALIASES)
    return names


def _check_checks(topo: Topology) -> Iterator[tuple[str, str]]:
    sources = {v.name for v in topo.vms}
    if topo.external is not None:
        sources |= set(EXTERNAL_ALIASES)
    targets = endpoint_names(topo)
    for i, check in enumerate(topo.checks):
        if problem := _known("source", check.src, sources):
            yield f"checks[{i}].from", problem
        if check.to not in targets and not _is_ip(check.to):
            yield f"checks[{i}].to", _known("target", check.to, targets) or ""
        port = check.port()
        if port is not None and not 1 <= port <= 65535:
            yield f"checks[{i}].kind", f"port {port} is out of range"


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def cross_check(topo: Topology) -> list[tuple[str, str]]:
    """Every reference problem of a shape-valid topology (empty: buildable)."""
    problems = [*_check_hosts(topo), *_check_external(topo)]
    for dupe in _dupes(p.name for p in topo.projects):
        problems.append(("projects", f"{dupe!r} is defined twice"))
    for i, proj in enumerate(topo.projects):
        problems.extend(_check_project(i, proj, topo))
    problems.extend(_check_vms(topo))
    problems.extend(_check_lbs(topo))
    problems.extend(_check_checks(topo))
    return problems


# ---------------------------------------------------------------------- loading


_UNION_TAG = re.compile(r"^(int|str|bool|none|constrained-(str|int)|[a-z-]+\[.*\])$")


def _loc(loc: tuple[str | int, ...]) -> str:
    """``('vms', 2, 'host')`` → ``vms[2].host``; union member tags are left out."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not _UNION_TAG.match(part):
            out += f".{part}" if out else part
    return out


def parse(data: Any, source: str = "<topology>") -> Topology:
    """Validate already-loaded YAML data; raises :class:`TopologyError`."""
    if not isinstance(data, dict):
        raise TopologyError(source, [("", "the file must be a mapping (hosts:, projects:, …)")])
    try:
        topo = Topology.model_validate(data)
    except ValidationError as exc:
        problems = [(_loc(err["loc"]), _message(err)) for err in exc.errors()]
        raise TopologyError(source, _unique(problems)) from None
    problems = cross_check(topo)
    if problems:
        raise TopologyError(source, problems)
    return topo


def _message(err: Any) -> str:
    msg = str(err["msg"])
    return msg.removeprefix("Value error, ")


def _unique(problems: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Union members fail once per alternative; keep one line per path and message."""
    seen: dict[tuple[str, str], None] = {}
    for problem in problems:
        seen.setdefault(problem, None)
    return list(seen)


def load(path: str | Path) -> Topology:
    """Read and validate a topology file; every failure is a :class:`TopologyError`."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise TopologyError(source, [("", f"cannot read the file: {exc.strerror}")]) from None
    return loads(text, source)


def loads(text: str, source: str = "<topology>") -> Topology:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise TopologyError(source, [(where, f"not valid YAML: {problem}")]) from None
    return parse(data, source)


def is_ip(text: str) -> bool:
    """True for an IP address literal (a check's ``to``)."""
    return _is_ip(text)


__all__ = [
    "Check",
    "External",
    "HealthMonitor",
    "Host",
    "LoadBalancer",
    "Network",
    "Project",
    "Router",
    "SecurityGroup",
    "Topology",
    "TopologyError",
    "Vm",
    "load",
    "loads",
    "parse",
]
