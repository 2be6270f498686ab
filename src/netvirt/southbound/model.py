"""Southbound (SB) data model: logical datapaths, port bindings, multicast groups,
logical flows, chassis and MAC bindings.

Everything here is plain, immutable data keyed by stable tunnel keys, so a
compile is a pure function of the NB snapshot and two compiles of the same NB
state are equal (the goldens and the incremental==recompute check rely on it).

Keys: a network's datapath key is its VNI (``provider:segmentation_id``), so a
tunnel packet's VNI names the switch directly; routers (never crossed over a
tunnel: routing happens on the sending host) get keys above 2**24. Port keys
are per datapath, 1..32767; multicast groups use 32768 and up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from netvirt.compiler.lflow import LogicalFlow

PortType = Literal["vif", "patch", "vip", "external"]


@dataclass(frozen=True, slots=True)
class Datapath:
    key: int
    kind: Literal["switch", "router"]
    name: str  # NB uuid of the network or router
    project_id: str
    display_name: str = ""


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


@dataclass
class SBState:
    generation: int = 0
    datapaths: dict[int, Datapath] = field(default_factory=dict)
    ports: dict[str, PortBinding] = field(default_factory=dict)
    groups: dict[tuple[int, str], MulticastGroup] = field(default_factory=dict)
    flows: list[LogicalFlow] = field(default_factory=list)
    chassis: dict[str, Chassis] = field(default_factory=dict)
    mac_bindings: dict[tuple[str, str], MacBinding] = field(default_factory=dict)

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
