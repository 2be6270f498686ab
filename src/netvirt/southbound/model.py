"""Southbound (SB) data model: logical datapaths, port bindings, multicast groups,
logical flows, chassis, MAC bindings and service (health) monitors.

Everything here is plain, immutable data keyed by stable tunnel keys, so a
compile is a pure function of the NB snapshot and two compiles of the same NB
state are equal (the goldens and the incremental==recompute check rely on it).

Keys: a network's datapath key is its VNI (``provider:segmentation_id``), so a
tunnel packet's VNI names the switch directly; routers (never crossed over a
tunnel: routing happens on the sending host) get keys above 2**24. Port keys
are per datapath, 1..32767; multicast groups use 32768 and up.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from netvirt.compiler.lflow import LogicalFlow

# "localnet": an external network's connection to the physical network, plugged on every
# gateway chassis' uplink at once and reached through a live gateway from other hosts
# (docs/gateways.md). "external" is reserved (unused).
PortType = Literal["vif", "patch", "vip", "external", "localnet"]


@dataclass(frozen=True, slots=True)
class Datapath:
    key: int
    kind: Literal["switch", "router"]
    name: str  # NB uuid of the network or router
    project_id: str
    display_name: str = ""


@dataclass(frozen=True, slots=True)
class BandwidthLimit:
    """A QoS ``bandwidth_limit`` in force on one direction of a VIF port, in Neutron's
    units: ``max_kbps`` kilobits (1000 bits) per second, ``max_burst_kbps``
    kilobits of burst. The compiler resolves Neutron's "0 = default burst" to
    the number the datapath uses (80 % of ``max_kbps``, see docs/qos.md), so
    the datapath never needs to know that convention."""

    max_kbps: int
    max_burst_kbps: int


@dataclass(frozen=True, slots=True)
class PortBinding:
    """A logical port. ``name`` is the NB port uuid; a router's side of an
    interface is ``lrp-<uuid of the NB interface port>``."""

    name: str
    key: int
    datapath: int
    type: PortType
    mac: int
    ips: tuple[str, ...]  # "10.0.0.5/24" (address with its subnet prefix length)
    peer: str | None = None  # patch ports: the other side
    requested_chassis: str = ""  # binding:host_id
    up: bool = False
    nb_id: str = ""
    # QoS bandwidth limits of VIF ports (its policy, else its network's): egress is
    # traffic from the VM, ingress traffic to the VM (Neutron's directions)
    egress_limit: BandwidthLimit | None = None
    ingress_limit: BandwidthLimit | None = None


@dataclass(frozen=True, slots=True)
class MulticastGroup:
    datapath: int
    name: str  # "_MC_flood", "_MC_unknown"
    key: int
    ports: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Chassis:
    name: str
    encap: Literal["geneve", "vxlan"]
    ip: str


@dataclass(frozen=True, slots=True)
class MacBinding:
    logical_port: str
    ip: str
    mac: int


MonitorType = Literal["PING", "TCP", "HTTP"]


@dataclass(frozen=True, slots=True)
class ServiceMonitor:
    """One load-balancer member to health-check, from the host where its VIF is bound.

    The compiler emits one per enabled member of a pool with an enabled health
    monitor, when the member's address (``monitor_address`` if set) is a fixed IP
    of a VIF port (``logical_port``; on the member's subnet, or on the VIP's
    network when the member names no subnet). Members with no such port are not
    checked: no host could reach them without routing, which probes do not do.

    Probe source (``source_ip``, ``source_mac``): the load balancer's VIP address
    and the VIP port's MAC. Why: it is an address the load balancer already owns
    in the tenant's network (no extra address is allocated from a subnet, as an
    Octavia amphora's member-side port would be), the tenant sees in the
    member's logs that the load balancer is checking it, and it is never the
    destination of member traffic other than probe replies (balanced traffic
    is DNATed, so members answer the clients; a member reaching its own VIP is
    unsupported hairpin). The host can therefore claim frames addressed to it
    without stealing anything from the pipeline. When the VIP is on the
    member's subnet the member ARPs for it and the checker answers with this
    MAC; otherwise the member routes its replies to its gateway and the checker
    still recognises them by destination address.

    ``port`` is the member's ``monitor_port`` or ``protocol_port`` (unused by
    PING). HTTP fields are empty strings for other types.
    """

    member_id: str
    pool_id: str
    monitor_id: str
    logical_port: str
    member_mac: int  # the VIF's MAC: probes are sent to it
    ip: str
    port: int
    type: MonitorType
    delay: int
    timeout: int
    max_retries: int
    max_retries_down: int
    source_ip: str
    source_mac: int
    http_method: str = ""
    url_path: str = ""
    expected_codes: str = ""


FlowChunks = dict[int, list[LogicalFlow]]  # datapath -> its flows, in canonical order


@dataclass(init=False, eq=False)
class SBState:
    """The SB state. Its flows are a list in the compiler's canonical order (datapath
    first); the compiler may give them as per-datapath chunks instead (``chunks``), and
    the list is then joined only when someone reads :attr:`flows`: an incremental
    compile replaces one datapath's chunk, and copying the 300k-flow list of a
    10k-port cloud on every port create cost more than the compile itself.
    :meth:`flows_of` and :meth:`flow_count` never join. Equality compares the flows,
    however they are held."""

    generation: int
    datapaths: dict[int, Datapath]
    ports: dict[str, PortBinding]
    groups: dict[tuple[int, str], MulticastGroup]
    chassis: dict[str, Chassis]
    mac_bindings: dict[tuple[str, str], MacBinding]
    monitors: dict[str, ServiceMonitor]  # by member id
    chunks: FlowChunks | None = field(repr=False)  # never changed once given (shared)
    _flows: list[LogicalFlow] | None = field(repr=False)

    def __init__(
        self,
        generation: int = 0,
        datapaths: dict[int, Datapath] | None = None,
        ports: dict[str, PortBinding] | None = None,
        groups: dict[tuple[int, str], MulticastGroup] | None = None,
        flows: list[LogicalFlow] | None = None,
        chassis: dict[str, Chassis] | None = None,
        mac_bindings: dict[tuple[str, str], MacBinding] | None = None,
        monitors: dict[str, ServiceMonitor] | None = None,
        chunks: FlowChunks | None = None,
        _flows: list[LogicalFlow] | None = None,
    ) -> None:
        self.generation = generation
        self.datapaths = {} if datapaths is None else datapaths
        self.ports = {} if ports is None else ports
        self.groups = {} if groups is None else groups
        self.chassis = {} if chassis is None else chassis
        self.mac_bindings = {} if mac_bindings is None else mac_bindings
        self.monitors = {} if monitors is None else monitors
        if flows is not None:  # given explicitly (also by dataclasses.replace): it wins
            self._flows, self.chunks = flows, None
        elif _flows is None and chunks is None:
            self._flows, self.chunks = [], None
        else:
            self._flows, self.chunks = _flows, chunks

    @property
    def flows(self) -> list[LogicalFlow]:
        if self._flows is None:
            assert self.chunks is not None
            joined: list[LogicalFlow] = []
            for dp in sorted(self.chunks):
                joined.extend(self.chunks[dp])
            self._flows = joined
        return self._flows

    @flows.setter
    def flows(self, flows: list[LogicalFlow]) -> None:
        self._flows, self.chunks = flows, None

    def set_chunks(self, chunks: FlowChunks) -> None:
        """Hold the flows as per-datapath chunks (see the class docstring)."""
        self._flows, self.chunks = None, chunks

    def flows_of(self, dps: Iterable[int]) -> list[LogicalFlow]:
        """The flows of ``dps`` in canonical order (without joining every chunk)."""
        if self._flows is None and self.chunks is not None:
            out: list[LogicalFlow] = []
            for dp in sorted(set(dps)):
                out.extend(self.chunks.get(dp, ()))
            return out
        flows = self.flows
        out = []
        for dp in sorted(set(dps)):
            lo = bisect.bisect_left(flows, dp, key=_datapath)
            hi = bisect.bisect_right(flows, dp, lo=lo, key=_datapath)
            out.extend(flows[lo:hi])
        return out

    def with_flows(self, flows: list[LogicalFlow]) -> SBState:
        """This state with other flows (``dataclasses.replace(state, flows=...)``)."""
        return SBState(
            self.generation,
            self.datapaths,
            self.ports,
            self.groups,
            flows,
            self.chassis,
            self.mac_bindings,
            self.monitors,
        )

    def flow_count(self) -> int:
        if self._flows is None and self.chunks is not None:
            return sum(len(c) for c in self.chunks.values())
        return len(self.flows)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SBState):
            return NotImplemented
        return (
            self.generation == other.generation
            and self.datapaths == other.datapaths
            and self.ports == other.ports
            and self.groups == other.groups
            and self.chassis == other.chassis
            and self.mac_bindings == other.mac_bindings
            and self.monitors == other.monitors
            and self.flows == other.flows
        )

    __hash__ = None  # type: ignore[assignment]  # mutable, as a dataclass with eq would be

    def port_key(self, name: str) -> int:
        """Tunnel key of a logical port or multicast group (names in match text)."""
        port = self.ports.get(name)
        if port is not None:
            return port.key
        for group in self.groups.values():
            if group.name == name:
                return group.key
        raise KeyError(f"unknown logical port {name!r}")

    def datapath_by_name(self, name: str) -> Datapath:
        for dp in self.datapaths.values():
            if dp.name == name:
                return dp
        raise KeyError(f"unknown datapath {name!r}")


def _datapath(flow: LogicalFlow) -> int:
    return flow.datapath
