"""Host stats reports (what agents send) and the hosts' view the API serves.

Theory of operation
-------------------
Every ~2 s an agent sends ``report_stats(chassis, stats)``: the document of
``Agent.counters()`` plus ``bound`` (interface → logical port), validated
here by :class:`StatsDoc` (bounded sizes, unknown keys dropped so an agent
newer than its server still reports). The SB service keeps the newest one
per chassis in memory (``InMemorySB.report_stats``); every report of any
kind from a chassis is also its heartbeat (``InMemorySB.last_seen``).

The API joins four sources into one host view (:func:`host_views`):

* the chassis registry (encapsulation, underlay IP) — memory;
* the heartbeat (last seen) and the newest stats — memory;
* the installed generation and when it was reported — the NB store's
  realization rows, which survive a server restart, so a host that was
  known before one still appears (with ``last_seen`` from that report).

``alive`` means heard from within ``alive_after`` seconds; ``state`` is
``DOWN`` when not alive, else ``UP`` when it installed the compiled
generation, else ``LAGGING``. Counters are the datapath's since it started
(they restart from zero with it, as interface counters do): ``rx`` is what
the datapath received from the interface (sent by the VM), ``tx`` what it
sent to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from netvirt.southbound.model import Chassis

MAX_PORTS = 4096  # interfaces per report (with the API's 1 MiB body limit)
MAX_KEYS = 128  # drop reasons, flow or SB statistics per map
MAX_COUNT = 2**63 - 1

Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]
Key = Annotated[str, Field(pattern=r"^[a-z0-9_]{1,64}$")]
IfaceName = Annotated[str, Field(min_length=1, max_length=255)]
PortName = Annotated[str, Field(min_length=1, max_length=255)]
COUNTERS = ("rx_packets", "rx_bytes", "tx_packets", "tx_bytes", "tx_errors")


class _Doc(BaseModel):
    """Stats documents tolerate unknown keys (dropped): agents and servers of
    neighbouring versions keep talking."""

    model_config = ConfigDict(extra="ignore")


class PortStats(_Doc):
    rx_packets: Count = 0
    rx_bytes: Count = 0
    tx_packets: Count = 0
    tx_bytes: Count = 0
    tx_errors: Count = 0
    drops: dict[Key, Count] = Field(default_factory=dict, max_length=MAX_KEYS)


class GenerationStats(_Doc):
    sb: Count | None = None
    installed: Count = 0


class StatsDoc(_Doc):
    """What ``report_stats`` carries (``Agent.counters()`` plus ``bound``)."""

    generation: GenerationStats = Field(default_factory=GenerationStats)
    ports: dict[IfaceName, PortStats] = Field(default_factory=dict, max_length=MAX_PORTS)
    tunnel: PortStats = Field(default_factory=PortStats)
    drops: dict[Key, Count] = Field(default_factory=dict, max_length=MAX_KEYS)
    flows: dict[Key, Count] = Field(default_factory=dict, max_length=MAX_KEYS)
    sb: dict[Key, Count] = Field(default_factory=dict, max_length=MAX_KEYS)
    bound: dict[IfaceName, PortName] = Field(default_factory=dict, max_length=MAX_PORTS)


# -- the view --------------------------------------------------------------------------------


def iso(ts: float | None) -> str | None:
    """Neutron's timestamp format (second precision, ``Z``)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str | None) -> float | None:
    if not text:
        return None
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


@dataclass(frozen=True)
class Received:
    """A host's newest stats document and when it arrived."""

    stats: Mapping[str, Any]
    at: float


@dataclass(frozen=True)
class HostSources:
    """Everything the host view reads, taken at one moment."""

    now: float
    alive_after: float
    compiled_generation: int
    chassis: Mapping[str, Chassis] = field(default_factory=dict)
    last_seen: Mapping[str, float] = field(default_factory=dict)
    stats: Mapping[str, Received] = field(default_factory=dict)
    realization: Mapping[str, tuple[int, float | None]] = field(default_factory=dict)

    def names(self) -> list[str]:
        return sorted({*self.chassis, *self.last_seen, *self.stats, *self.realization})

    def seen(self, name: str) -> float | None:
        """The newest sign of life: a report in this server's lifetime, or the
        installed report in the store (from before a restart)."""
        times = [self.last_seen.get(name), self.realization.get(name, (0, None))[1]]
        known = [t for t in times if t is not None]
        return max(known) if known else None

    def alive(self, name: str) -> bool:
        seen = self.seen(name)
        return seen is not None and self.now - seen < self.alive_after


def port_counters(data: Mapping[str, Any] | None) -> dict[str, Any]:
    """The counters of one interface (zeros when unknown), drops by reason."""
    data = data or {}
    out: dict[str, Any] = {name: int(data.get(name, 0)) for name in COUNTERS}
    out["drops"] = dict(sorted((data.get("drops") or {}).items()))
    return out


def _ports(stats: Mapping[str, Any]) -> list[dict[str, Any]]:
    bound: Mapping[str, str] = stats.get("bound") or {}
    ports: Mapping[str, Any] = stats.get("ports") or {}
    return [
        {"interface": iface, "port_id": bound.get(iface)} | port_counters(data)
        for iface, data in sorted(ports.items())
    ]


def host_view(src: HostSources, name: str) -> dict[str, Any]:
    """One host as the API shows it (see the module docstring)."""
    chassis = src.chassis.get(name)
    installed = src.realization.get(name, (None, None))[0]
    received = src.stats.get(name)
    stats: Mapping[str, Any] = received.stats if received else {}
    alive = src.alive(name)
    if not alive:
        state = "DOWN"
    elif installed is not None and installed >= src.compiled_generation:
        state = "UP"
    else:
        state = "LAGGING"
    generation = stats.get("generation") or {}
    return {
        "name": name,
        "encap": chassis.encap if chassis else None,
        "underlay_ip": chassis.ip if chassis else None,
        "last_seen": iso(src.seen(name)),
        "alive": alive,
        "state": state,
        "installed_generation": installed,
        "sb_generation": generation.get("sb"),
        "stats_at": iso(received.at) if received else None,
        "ports": _ports(stats),
        "tunnel": port_counters(stats.get("tunnel")),
        "drops": dict(sorted((stats.get("drops") or {}).items())),
        "flows": dict(stats.get("flows") or {}),
    }


def host_views(src: HostSources) -> list[dict[str, Any]]:
    return [host_view(src, name) for name in src.names()]


def port_view(src: HostSources, port_id: str, binding_host: str) -> dict[str, Any]:
    """The counters of a logical port, from the host that reports it.

    Several hosts may report one port for a moment (a migration: the old
    host has not unplugged yet); the one ``binding:host_id`` names wins,
    else the newest report. No host reporting it: zeros and ``host`` null.
    """
    found: list[tuple[bool, float, str, str, Mapping[str, Any] | None]] = []
    for host, received in src.stats.items():
        ports: Mapping[str, Any] = received.stats.get("ports") or {}
        for iface, port in (received.stats.get("bound") or {}).items():
            if port == port_id:
                found.append((host == binding_host, received.at, host, iface, ports.get(iface)))
    if not found:
        base = {"port_id": port_id, "host": None, "interface": None}
        return base | {"alive": False, "updated_at": None} | port_counters(None)
    _, at, host, iface, data = max(found, key=lambda f: (f[0], f[1], f[2]))
    head = {"port_id": port_id, "host": host, "interface": iface}
    return head | {"alive": src.alive(host), "updated_at": iso(at)} | port_counters(data)
