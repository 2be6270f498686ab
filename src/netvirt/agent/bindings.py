"""Which logical ports live on this host, which live elsewhere, and what to claim.

The lab (or an operator) plugs an interface into the datapath and tells the
agent which logical port it is (``Plug``: interface name → NB port id, like
Open vSwitch's ``external_ids:iface-id``). A logical VIF port is

* **local** when it is plugged here and its ``requested_chassis``
  (``binding:host_id``) is empty or names this chassis: the agent claims it
  (``SBSource.report_port(port, chassis, up=True)``) and delivers to the
  interface;
* **remote** when ``requested_chassis`` names another chassis the SB knows:
  packets for it are tunnelled to that chassis' underlay address;
* **unbound** otherwise (plugged nowhere we know of, or requested by an
  unregistered chassis): packets for it are dropped as ``UNKNOWN_PORT``.

A ``localnet`` port (an external network's uplink, docs/gateways.md) may be
plugged on many chassis at once and has no requested chassis: it is local
wherever it is plugged, and elsewhere reached *via a gateway* (the forwarder
picks a live one per flow). It is never claimed: no single chassis holds it.

A port plugged here but requested by another chassis is not claimed: during a
migration the port follows ``binding:host_id`` as soon as the API changes it,
even before the old host's VM is unplugged (as OVN's requested-chassis).

:class:`Claims` turns the local set into the minimal sequence of port status
reports and forgets everything after a resync (the SB may have restarted and
lost them), so a report lost to a disconnect is always sent again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from netvirt.southbound.model import Chassis, SBState

if TYPE_CHECKING:
    from netvirt.agent.physical import Port


@dataclass(frozen=True, slots=True)
class Plug:
    """An interface attached to this host's datapath, standing for ``logical_port``."""

    port: Port
    logical_port: str

    @property
    def iface(self) -> str:
        return self.port.name


@dataclass(frozen=True)
class Bindings:
    """Where every logical VIF port is, as seen from ``chassis``."""

    chassis: str
    local: dict[str, str] = field(default_factory=dict)  # logical port -> interface
    remote: dict[str, Chassis] = field(default_factory=dict)  # logical port -> its chassis
    unbound: dict[str, str] = field(default_factory=dict)  # logical port -> why
    ignored: dict[str, str] = field(default_factory=dict)  # interface -> why not claimed
    via_gateway: set[str] = field(default_factory=set)  # localnet ports not plugged here


def bind(sb: SBState, chassis: str, plugs: Mapping[str, str]) -> Bindings:
    """Classify the SB's VIF ports for ``chassis`` given ``plugs`` (interface → port id)."""
    result = Bindings(chassis)
    by_port: dict[str, str] = {}
    for iface in sorted(plugs):
        port = plugs[iface]
        if port in by_port:
            result.ignored[iface] = f"{port} is already plugged as {by_port[port]}"
        elif port not in sb.ports:
            result.ignored[iface] = f"{port} is not a logical port (yet)"
        else:
            by_port[port] = iface
    for pb in sb.ports.values():
        if pb.type == "localnet":
            if pb.name in by_port:
                result.local[pb.name] = by_port[pb.name]
            else:
                result.via_gateway.add(pb.name)
            continue
        if pb.type != "vif":
            continue
        requested = pb.requested_chassis
        plugged = by_port.get(pb.name)
        if plugged is not None and requested in ("", chassis):
            result.local[pb.name] = plugged
            continue
        if plugged is not None:
            result.ignored[plugged] = f"{pb.name} is requested by chassis {requested!r}"
        if requested and requested != chassis and requested in sb.chassis:
            result.remote[pb.name] = sb.chassis[requested]
        elif requested == chassis:
            result.unbound[pb.name] = "requested here but not plugged"
        elif requested:
            result.unbound[pb.name] = f"chassis {requested!r} is not registered"
        else:
            result.unbound[pb.name] = "not bound to any chassis"
    return result


class Claims:
    """Port status reports still to send, given what was reported so far."""

    def __init__(self, chassis: str) -> None:
        self.chassis = chassis
        self.reported: set[str] = set()  # logical ports the SB confirmed up from here

    def pending(self, bindings: Bindings, sb: SBState) -> list[tuple[str, bool]]:
        """(port, up) reports that would make the SB agree with ``bindings``.

        A port that stops being local is reported down only while the SB still
        places it here (or nowhere); once it is requested elsewhere, or gone,
        the claim is forgotten silently: the new host's report is the one that
        counts.
        """
        out = [
            (port, True)
            for port in sorted(bindings.local)
            if port not in self.reported and not _shared(sb, port)
        ]
        for port in sorted(self.reported):
            if port in bindings.local:
                continue
            pb = sb.ports.get(port)
            if pb is not None and pb.requested_chassis in ("", self.chassis):
                out.append((port, False))
            else:
                self.reported.discard(port)
        return out

    def confirm(self, port: str, up: bool) -> None:
        """The SB accepted the report."""
        if up:
            self.reported.add(port)
        else:
            self.reported.discard(port)

    def forget(self) -> None:
        """After a resync: report everything again."""
        self.reported.clear()


def _shared(sb: SBState, port: str) -> bool:
    """A port plugged on several chassis at once (localnet): nobody claims it."""
    pb = sb.ports.get(port)
    return pb is not None and pb.type == "localnet"
