"""The contract between the southbound service and host agents.

An agent sees the SB state only through :class:`SBSource`, whatever carries
it: the in-process store (tests, single-host embedded mode), the HTTP service
of ``netvirt serve`` (the lab), or etcd later. The agent starts from a full
snapshot, then receives deltas by generation; after any disconnect or a gap
in generations it asks for a snapshot again (resync), never replays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from netvirt.southbound.model import Chassis, SBState, ServiceMonitor


@dataclass(frozen=True)
class SBDelta:
    """What changed from ``base`` to ``generation`` (keys of removed objects, new
    or changed objects in full). Flows are compared by identity (datapath,
    stage, priority, match, actions)."""

    base: int
    generation: int
    datapaths_removed: tuple[int, ...] = ()
    datapaths: tuple[object, ...] = ()
    ports_removed: tuple[str, ...] = ()
    ports: tuple[object, ...] = ()
    groups_removed: tuple[tuple[int, str], ...] = ()
    groups: tuple[object, ...] = ()
    flows_removed: tuple[object, ...] = ()
    flows: tuple[object, ...] = ()
    chassis: tuple[Chassis, ...] = field(default=())
    chassis_removed: tuple[str, ...] = ()
    monitors: tuple[ServiceMonitor, ...] = ()
    monitors_removed: tuple[str, ...] = ()  # member ids


class SBSource(Protocol):
    def snapshot(self) -> SBState:
        """The whole current SB state (with its generation)."""
        ...

    def changes(self, since: int, timeout: float) -> SBDelta | SBState | None:
        """Changes after ``since``: a delta, a full state when ``since`` is too old
        to diff from, or None when nothing changed within ``timeout`` seconds."""
        ...

    def register_chassis(self, chassis: Chassis) -> None: ...

    def report_port(self, port: str, chassis: str, up: bool) -> None:
        """The port is plugged on ``chassis`` (binding) and its link is ``up``."""
        ...

    def report_installed(self, chassis: str, generation: int) -> None: ...

    def report_stats(self, chassis: str, stats: dict[str, Any]) -> None:
        """The host's counters (the document of ``Agent.counters``, see docs/southbound.md),
        sent every few seconds; it doubles as the host's heartbeat. Kept in memory only:
        it never writes the NB store and never moves the generation."""
        ...

    def report_member_health(self, chassis: str, member_id: str, status: str) -> None:
        """A health check on ``chassis`` found the member ``status`` (ONLINE or ERROR).
        Stale reports (the member lost its monitor, its port moved) are ignored."""
        ...
