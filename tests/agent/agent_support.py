"""In-memory twins for agent tests: an SB source, ports, and an underlay between hosts.

* :class:`FakeSB` serves published SB states the way the SB service does: a
  snapshot, then deltas by generation (computed here by plain comparison), a
  full state when asked from an unknown generation; it records registrations
  and reports, and can be told to fail or to answer with a gap.
* :class:`FakePort` records what the datapath sends to a VM.
* :class:`Underlay` carries tunnel payloads between agents by underlay IP,
  encapsulated with the real codecs (``physical.encapsulate``) and delivered
  when :meth:`Underlay.run` is called, like a network between hosts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from netvirt.agent import Agent
from netvirt.agent.physical import Encap, encapsulate
from netvirt.southbound.model import Chassis, SBState
from netvirt.southbound.source import SBDelta


def sb_diff(old: SBState, new: SBState) -> SBDelta:
    """What an SB service would send to move an agent from ``old`` to ``new``."""
    old_flows, new_flows = set(old.flows), set(new.flows)
    return SBDelta(
        base=old.generation,
        generation=new.generation,
        datapaths_removed=tuple(k for k in old.datapaths if k not in new.datapaths),
        datapaths=tuple(v for k, v in new.datapaths.items() if old.datapaths.get(k) != v),
        ports_removed=tuple(k for k in old.ports if k not in new.ports),
        ports=tuple(v for k, v in new.ports.items() if old.ports.get(k) != v),
        groups_removed=tuple(k for k in old.groups if k not in new.groups),
        groups=tuple(v for k, v in new.groups.items() if old.groups.get(k) != v),
        flows_removed=tuple(f for f in old.flows if f not in new_flows),
        flows=tuple(f for f in new.flows if f not in old_flows),
        chassis=tuple(v for k, v in new.chassis.items() if old.chassis.get(k) != v),
        chassis_removed=tuple(k for k in old.chassis if k not in new.chassis),
    )


def copy_state(sb: SBState, generation: int, chassis: dict[str, Chassis]) -> SBState:
    return SBState(
        generation=generation,
        datapaths=dict(sb.datapaths),
        ports=dict(sb.ports),
        groups=dict(sb.groups),
        flows=list(sb.flows),
        chassis=dict(chassis),
        mac_bindings=dict(sb.mac_bindings),
    )


class FakeSB:
    """An in-memory SB source with its own generation counter (see the module docstring)."""

    def __init__(self) -> None:
        self.history: dict[int, SBState] = {0: SBState()}
        self.generation = 0
        self.chassis: dict[str, Chassis] = {}
        self.port_reports: list[tuple[str, str, bool]] = []
        self.installed: dict[str, int] = {}
        self.health: dict[str, tuple[str, str]] = {}  # member id -> (chassis, status)
        self.stats: dict[str, dict[str, Any]] = {}
        self.fail = False
        self.mode = "delta"  # delta | full | gap
        self.snapshots = 0

    @property
    def current(self) -> SBState:
        return self.history[self.generation]

    def publish(self, sb: SBState) -> int:
        """Serve ``sb`` (chassis are the registered ones) as the next generation."""
        self.generation += 1
        self.history[self.generation] = copy_state(sb, self.generation, self.chassis)
        return self.generation

    def _check(self) -> None:
        if self.fail:
            raise ConnectionError("SB unreachable")

    # -- SBSource ---------------------------------------------------------------------------
    def snapshot(self) -> SBState:
        self._check()
        self.snapshots += 1
        return copy_state(self.current, self.generation, self.current.chassis)

    def changes(self, since: int, timeout: float) -> SBDelta | SBState | None:
        self._check()
        if since == self.generation:
            return None
        if self.mode == "gap":
            return replace(sb_diff(self.history[since], self.current), base=since - 1)
        if self.mode == "full" or since not in self.history:
            return self.snapshot()
        return sb_diff(self.history[since], self.current)

    def register_chassis(self, chassis: Chassis) -> None:
        self._check()
        if self.chassis.get(chassis.name) != chassis:
            self.chassis[chassis.name] = chassis
            self.publish(self.current)

    def report_port(self, port: str, chassis: str, up: bool) -> None:
        self._check()
        self.port_reports.append((port, chassis, up))

    def report_installed(self, chassis: str, generation: int) -> None:
        self._check()
        self.installed[chassis] = generation

    def report_member_health(self, chassis: str, member_id: str, status: str) -> None:
        self._check()
        self.health[member_id] = (chassis, status)

    def report_stats(self, chassis: str, stats: dict[str, Any]) -> None:
        self._check()
        self.stats[chassis] = stats


@dataclass
class FakePort:
    name: str
    sent: list[bytes] = field(default_factory=list)

    def send_batch(self, frames: Sequence[bytes]) -> int:
        self.sent.extend(frames)
        return len(frames)

    def take(self) -> list[bytes]:
        out, self.sent = self.sent, []
        return out


@dataclass
class Underlay:
    """Agents by underlay IP, and the tunnel payloads in flight between them."""

    hosts: dict[str, Agent] = field(default_factory=dict)
    in_flight: list[tuple[str, Encap, bytes]] = field(default_factory=list)
    delivered: list[tuple[str, Encap, bytes]] = field(default_factory=list)

    def endpoints(self) -> dict[str, Endpoint]:
        """One host's tunnel endpoints, one per encapsulation."""
        return {"geneve": Endpoint(self, "geneve"), "vxlan": Endpoint(self, "vxlan")}

    def run(self) -> int:
        """Deliver everything in flight (and what that causes); how many payloads moved."""
        moved = 0
        while self.in_flight:
            ip, encap, payload = self.in_flight.pop(0)
            self.delivered.append((ip, encap, payload))
            moved += 1
            host = self.hosts.get(ip)
            if host is not None:
                host.handle_tunnel(payload, encap)
        return moved


@dataclass
class Endpoint:
    """A host's :class:`~netvirt.agent.physical.Tunnel` of one encapsulation."""

    underlay: Underlay
    encap: Encap
    sent: int = 0

    def send(self, remote: str, vni: int, item: bytes, ingress: int = 0, egress: int = 0) -> int:
        self.sent += 1
        payload = encapsulate(self.encap, vni, ingress, egress, item)
        self.underlay.in_flight.append((remote, self.encap, payload))
        return 1
