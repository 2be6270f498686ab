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

from netvirt.southbound.model import Chassis, PortBinding, SBState

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
    by_port = _plugged(sb, plugs, result)
    for pb in sb.ports.values():
        _classify(result, sb, pb, by_port)
    return result


def _plugged(sb: SBState, plugs: Mapping[str, str], result: Bindings) -> dict[str, str]:
    """port → interface of the plugs that stand for a logical port (the others are
    recorded in ``result.ignored``)."""
    by_port: dict[str, str] = {}
    for iface in sorted(plugs):
        port = plugs[iface]
        if port in by_port:
            result.ignored[iface] = f"{port} is already plugged as {by_port[port]}"
        elif port not in sb.ports:
            result.ignored[iface] = f"{port} is not a logical port (yet)"
        else:
            by_port[port] = iface
    return by_port


def _classify(result: Bindings, sb: SBState, pb: PortBinding, by_port: dict[str, str]) -> None:
    """Put one port where it belongs in ``result`` (see the module docstring)."""
    chassis = result.chassis
    if pb.type == "localnet":
        if pb.name in by_port:
            result.local[pb.name] = by_port[pb.name]
        else:
            result.via_gateway.add(pb.name)
        return
    if pb.type != "vif":
        return
    requested = pb.requested_chassis
    plugged = by_port.get(pb.name)
    if plugged is not None and requested in ("", chassis):
        result.local[pb.name] = plugged
        return
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


class Binder:
    """:func:`bind`, again only for what changed since its previous result.

    A port's place depends on its own binding, the chassis registry and the plugs, so
    when the registry is the same the previous result is kept for every port except the
    changed ones and the plugged ones (before and after): a port create at 10k ports
    classifies one port, not ten thousand. ``changed`` None (after a snapshot, or when
    the caller lost track) binds everything. Equal to :func:`bind` whatever the history
    (``tests/agent/test_bindings_incremental.py``)."""

    def __init__(self, chassis: str) -> None:
        self.chassis = chassis
        self.last: Bindings | None = None
        self._plugs: dict[str, str] = {}
        self._registry: dict[str, Chassis] = {}

    def reset(self) -> None:
        self.last = None

    def bind(self, sb: SBState, plugs: Mapping[str, str], changed: set[str] | None) -> Bindings:
        last = self.last
        self.last = None  # until this one is done: a failure binds everything next time
        if last is None or changed is None or sb.chassis != self._registry:
            out = bind(sb, self.chassis, plugs)
        else:
            out = _rebind(last, sb, plugs, {*changed, *plugs.values(), *self._plugs.values()})
        self.last, self._plugs, self._registry = out, dict(plugs), dict(sb.chassis)
        return out


def _rebind(last: Bindings, sb: SBState, plugs: Mapping[str, str], ports: set[str]) -> Bindings:
    result = Bindings(
        last.chassis,
        dict(last.local),
        dict(last.remote),
        dict(last.unbound),
        {},
        set(last.via_gateway),
    )
    by_port = _plugged(sb, plugs, result)
    for name in sorted(ports):
        result.local.pop(name, None)
        result.remote.pop(name, None)
        result.unbound.pop(name, None)
        result.via_gateway.discard(name)
        pb = sb.ports.get(name)
        if pb is not None:
            _classify(result, sb, pb, by_port)
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
