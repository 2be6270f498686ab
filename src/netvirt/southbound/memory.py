"""The southbound service in-process: what ``netvirt serve`` offers host agents.

Theory of operation
-------------------
* **States by generation.** The served SB state of generation *g* is the
  compiler's output for NB generation *g* plus the chassis registry at the
  time it was first served. It is built once, kept in a bounded history
  (``history`` newest generations) and never changed afterwards, so every agent
  that holds *g* holds the same thing, and a delta between two generations is
  well defined.
* **changes(since).** A delta from the kept state ``since`` to the newest, or
  the full state when ``since`` is not kept (too old, never served because
  several writes were compiled together, or from another server's lifetime),
  when the delta would not be smaller than the state, or when it cannot carry
  the difference (see :mod:`diff`). It long-polls: the caller sleeps on the NB
  store's change condition (every write in this process notifies it) in
  slices of ``poll`` seconds, so writes from other processes are seen within
  ``poll`` too. Deltas are cached per (since, generation): agents that are in
  step ask the same question.
* **Per-chassis views.** An agent may ask for the flows of the datapaths that
  concern its chassis only (``chassis=`` on ``snapshot``/``changes``, what
  OVN calls conditional monitoring): the switches with a port whose
  ``requested_chassis`` is that chassis, every switch with a ``localnet`` port
  (a gateway chassis plugs it without the NB saying so), and everything
  reachable from those through patch ports. Datapaths, ports, groups, chassis
  and monitors are always sent whole (they are small; an agent needs remote
  ports to tunnel to them). A datapath entering the view arrives as added
  flows in the next delta, one leaving it as removed flows. At 10k ports a
  host with 1k of them reads a tenth of the flows, and a host with none of
  them (the lab's anchor host) almost nothing.
* **Chassis** (name, encapsulation, underlay IP) live in memory: agents
  register at start and after every resync, so a restarted server learns them
  again. A new or changed chassis bumps the NB generation (an empty write):
  every agent must learn the new tunnel endpoint, and ``?wait=installed``
  then means "every host can reach it".
* **report_port** is the binding of a VIF: ``binding:host_id`` is desired
  state (the compiler puts it in ``PortBinding.requested_chassis``, which is how
  agents learn where remote ports live), so changing it is a normal write
  that bumps the generation. The port's ``status`` (ACTIVE/DOWN) is discovered
  state, written with ``bump=False``. Consequence, by decision: the SB
  ``PortBinding.up`` (derived from status at compile time) is only as fresh as
  the last compile. No builder reads it — flows never depend on link state —
  and an agent knows its own ports' links; recompiling (and making every host
  reinstall) on each VM boot would buy nothing. The authoritative status is
  the NB port (``GET /v2.0/ports/{id}``).
* **report_installed** records the host's installed generation
  (``identity.report``), which ``/v2.0/netvirt/status`` and
  ``?wait=installed`` read.
* **report_member_health** is a health check result from the host where the
  member's VIF is bound (``agent/health.py``). Unlike port status it *is*
  written with a generation bump: the ``lb`` builder leaves OFFLINE/ERROR
  members out of ``ct_lb``, so the flows change and every host must install
  them. Only real changes are written (a host repeating the status after a
  restart costs nothing), and stale reports are dropped silently: a member
  with no monitor in the newest served state, or whose VIF is not bound to
  the reporting chassis (it migrated; the new host checks it now).
* **report_stats** keeps the newest counters of each host in memory, never
  in the NB store and without a generation bump (they change every few
  seconds and mean nothing after a restart). Every report of a chassis —
  stats, registration, ports, installed — is also its heartbeat:
  :meth:`InMemorySB.last_seen` is when it was last heard of, and a host is
  alive while that is less than ``alive_after`` seconds old (default
  :data:`ALIVE_AFTER`; agents send stats every ~2 s).

Thread-safety: every method may be called from any thread (the API serves
each long-poll on a worker thread). One lock guards history, caches and the
registries; the compile itself runs outside it (``CompilerService`` has its
own lock).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy.orm import Session

from netvirt.northbound import identity
from netvirt.northbound.db import Database
from netvirt.northbound.errors import InvalidInput, not_found
from netvirt.northbound.lbaas_members import set_member_operating_status
from netvirt.northbound.schema import Member, Port
from netvirt.southbound import codec
from netvirt.southbound.diff import NotDiffable, diff
from netvirt.southbound.hosts import Received
from netvirt.southbound.model import Chassis, PortBinding, SBState
from netvirt.southbound.source import SBDelta, SBSource

log = logging.getLogger(__name__)
SLOW_ENCODE = 0.5  # seconds: encoding a change for longer than this is logged
ENCAPS = ("geneve", "vxlan")
HEALTH_STATUSES = ("ONLINE", "ERROR")
ALIVE_AFTER = 10.0  # seconds of silence after which a host is down (5 missed stats reports)


class Compiler(Protocol):
    """What the service needs of :class:`~netvirt.compiler.service.CompilerService`."""

    @property
    def db(self) -> Database: ...

    def current(self) -> SBState: ...


@dataclass
class Change:
    """One answer to ``changes``: a delta (with the states it spans) or a full state."""

    result: SBDelta | SBState
    state: SBState  # the state at result's generation
    base: SBState | None = None  # the state a delta applies to
    _wire: dict[str, Any] | None = field(default=None, repr=False)
    _body: bytes | None = field(default=None, repr=False)

    def wire(self) -> dict[str, Any]:
        """The JSON document for this change (encoded once, shared by every agent)."""
        if self._wire is None:
            if isinstance(self.result, SBDelta):
                assert self.base is not None
                self._wire = codec.encode_delta(self.result, self.base, self.state)
            else:
                self._wire = codec.encode_state(self.result)
        return self._wire

    def body(self) -> bytes:
        """:meth:`wire` as compact JSON bytes (serialized once as well)."""
        if self._body is None:
            started = time.perf_counter()
            self._body = json.dumps(self.wire(), separators=(",", ":")).encode()
            took = time.perf_counter() - started
            if took >= SLOW_ENCODE:
                log.info(
                    "encoded SB %s of generation %d: %.1f MB in %.3fs",
                    "delta" if isinstance(self.result, SBDelta) else "state",
                    self.state.generation,
                    len(self._body) / 1e6,
                    took,
                )
        return self._body


def _delta_size(delta: SBDelta) -> int:
    return sum(
        len(part) for part in (delta.flows, delta.flows_removed, delta.ports, delta.ports_removed)
    )


def relevant_datapaths(state: SBState, chassis: str) -> frozenset[int]:
    """The datapaths whose flows ``chassis`` needs (see "Per-chassis views" above)."""
    seeds = [
        pb.datapath
        for pb in state.ports.values()
        if pb.requested_chassis == chassis or pb.type == "localnet"
    ]
    patches = (pb for pb in state.ports.values() if pb.type == "patch")
    return _reachable(seeds, patches, state.ports)


def _reachable(
    seeds: Iterable[int], patches: Iterable[PortBinding], ports: Mapping[str, PortBinding]
) -> frozenset[int]:
    """The datapaths reachable from ``seeds`` over patch ports and their peers."""
    neighbours: dict[int, set[int]] = {}
    for pb in patches:
        peer = ports.get(pb.peer) if pb.peer else None
        if peer is not None:
            neighbours.setdefault(pb.datapath, set()).add(peer.datapath)
            neighbours.setdefault(peer.datapath, set()).add(pb.datapath)
    seen: set[int] = set()
    todo = list(seeds)
    while todo:
        dp = todo.pop()
        if dp not in seen:
            seen.add(dp)
            todo.extend(neighbours.get(dp, ()))
    return frozenset(seen)


class ViewIndex:
    """:func:`relevant_datapaths` of one chassis, kept from generation to generation by
    looking only at the port bindings the compiler says it rebuilt (a port create at
    10k ports looks at one switch's ports, not at every port): per datapath, how many
    of its ports make it relevant (requested by the chassis, or ``localnet``), and every
    patch port (the graph the relevance spreads over). Equal to
    :func:`relevant_datapaths` (``tests/southbound/test_views.py``)."""

    def __init__(self, state: SBState, chassis: str) -> None:
        self.chassis = chassis
        self.generation = state.generation
        self.ports = state.ports  # the bindings this index reflects (never mutated)
        self.seeds: dict[int, int] = {}
        self.patches: dict[str, PortBinding] = {}
        for pb in state.ports.values():
            self._count(pb, 1)

    def _count(self, pb: PortBinding, step: int) -> None:
        if pb.requested_chassis == self.chassis or pb.type == "localnet":
            self.seeds[pb.datapath] = self.seeds.get(pb.datapath, 0) + step
            if not self.seeds[pb.datapath]:
                del self.seeds[pb.datapath]
        if pb.type == "patch":
            if step > 0:
                self.patches[pb.name] = pb
            else:
                self.patches.pop(pb.name, None)

    def advance(self, state: SBState, names: frozenset[str]) -> None:
        """Move to ``state``, whose bindings differ from this index's only in ``names``."""
        for name in names:
            old, new = self.ports.get(name), state.ports.get(name)
            if old is new:
                continue
            if old is not None:
                self._count(old, -1)
            if new is not None:
                self._count(new, 1)
        self.ports, self.generation = state.ports, state.generation

    def datapaths(self) -> frozenset[int]:
        return _reachable(self.seeds, self.patches.values(), self.ports)


class InMemorySB:
    """:class:`~netvirt.southbound.source.SBSource` served from the compiler's output."""

    def __init__(
        self,
        compiler: Compiler,
        *,
        history: int = 16,
        poll: float = 0.5,
        clock: Callable[[], float] = time.time,
        alive_after: float = ALIVE_AFTER,
    ) -> None:
        self.compiler = compiler
        self.clock = clock
        self.alive_after = alive_after
        self.db = compiler.db
        self.history_size = max(1, history)
        self.poll = poll
        self._lock = threading.Lock()
        self._history: OrderedDict[int, SBState] = OrderedDict()
        self._changes: OrderedDict[tuple[int, int, str | None], Change] = OrderedDict()
        self._snapshots: dict[str | None, Change] = {}
        self._views: OrderedDict[tuple[int, str], tuple[frozenset[int], SBState]] = OrderedDict()
        self._indexes: dict[str, ViewIndex] = {}  # per chassis, of the newest view made
        self._index_lock = threading.Lock()
        self._chassis: dict[str, Chassis] = {}
        self._bindings: dict[str, tuple[str, bool]] = {}
        self._seen: dict[str, float] = {}  # chassis -> wall-clock time of its last report
        self._stats: dict[str, Received] = {}

    # ------------------------------------------------------------------ states

    def _latest(self) -> SBState | None:
        return next(reversed(self._history.values()), None)

    def refresh(self) -> SBState:
        """The newest served state, compiling first if the NB moved."""
        compiled = self.compiler.current()
        with self._lock:
            latest = self._latest()
            if latest is not None and compiled.generation <= latest.generation:
                return latest
            served = replace(compiled, chassis=dict(self._chassis))
            self._history[served.generation] = served
            while len(self._history) > self.history_size:
                self._history.popitem(last=False)
            return served

    def state_at(self, generation: int) -> SBState | None:
        """A kept state (None once it has left the history)."""
        with self._lock:
            return self._history.get(generation)

    def snapshot(self, chassis: str | None = None) -> SBState:
        return self.view(self.refresh(), chassis)[1]

    def snapshot_change(self, chassis: str | None = None) -> Change:
        """The newest full state as a :class:`Change` (its wire form is cached)."""
        return self._full(self.refresh(), chassis)

    def _full(self, state: SBState, chassis: str | None = None) -> Change:
        view = self.view(state, chassis)[1]
        with self._lock:
            cached = self._snapshots.get(chassis)
            if cached is None or cached.state is not view:
                cached = self._snapshots[chassis] = Change(view, view)
            return cached

    def view(self, state: SBState, chassis: str | None) -> tuple[frozenset[int] | None, SBState]:
        """(datapaths, state with only their flows) for ``chassis``; (None, state) when
        no chassis is given. Cached per served generation."""
        if not chassis:
            return None, state
        key = (state.generation, chassis)
        with self._lock:
            cached = self._views.get(key)
            if cached is not None and cached[1].generation == state.generation:
                return cached
        dps = self._relevant(state, chassis)
        flows = state.flows_of(dps)
        view = (dps, state.with_flows(flows))
        with self._lock:
            self._views[key] = view
            while len(self._views) > 2 * self.history_size:
                self._views.popitem(last=False)
        return view

    def _relevant(self, state: SBState, chassis: str) -> frozenset[int]:
        """:func:`relevant_datapaths`, from the chassis' :class:`ViewIndex` moved forward
        when the compiler can name the bindings it rebuilt since."""
        with self._index_lock:  # one index per chassis, moved by one request at a time
            index = self._indexes.get(chassis)
            ports_since = getattr(self.compiler, "ports_dirty_since", None)
            names = None
            if index is not None and ports_since is not None:
                if index.generation == state.generation and index.ports is state.ports:
                    return index.datapaths()
                if index.generation < state.generation:
                    names = ports_since(index.generation, state.generation)
            if index is None or names is None:
                index = self._indexes[chassis] = ViewIndex(state, chassis)
            else:
                index.advance(state, names)
            return index.datapaths()

    # ------------------------------------------------------------------ changes

    def _wait(self, since: int, timeout: float) -> SBState | None:
        deadline = time.monotonic() + timeout
        while True:
            seen = self.db.writes
            latest = self.refresh()
            if latest.generation != since:
                return latest
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.db.wait_changed(min(remaining, self.poll), seen)

    def _change(self, since: int, latest: SBState, chassis: str | None = None) -> Change:
        key = (since, latest.generation, chassis)
        with self._lock:
            cached = self._changes.get(key)
            base = self._history.get(since)
        if cached is not None:
            return cached
        if base is None or since >= latest.generation:
            return self._full(latest, chassis)
        dirty_since = getattr(self.compiler, "dirty_since", None)
        dps = dirty_since(since, latest.generation) if dirty_since is not None else None
        ports_since = getattr(self.compiler, "ports_dirty_since", None)
        names = ports_since(since, latest.generation) if ports_since is not None else None
        before, base = self.view(base, chassis)
        after, latest = self.view(latest, chassis)
        if dps is not None and before is not None and after is not None:
            dps = dps | (before ^ after)  # datapaths entering or leaving the view
        try:
            delta = diff(base, latest, dps, names)
        except NotDiffable:
            return self._full(latest, chassis)
        if _delta_size(delta) >= latest.flow_count() + len(latest.ports):
            return self._full(latest, chassis)
        change = Change(delta, latest, base)
        with self._lock:
            self._changes[key] = change
            while len(self._changes) > self.history_size:
                self._changes.popitem(last=False)
        return change

    def poll_changes(self, since: int, timeout: float, chassis: str | None = None) -> Change | None:
        """Like :meth:`changes`, with the states a delta spans (for encoding)."""
        latest = self._wait(since, timeout)
        return None if latest is None else self._change(since, latest, chassis)

    def changes(
        self, since: int, timeout: float, chassis: str | None = None
    ) -> SBDelta | SBState | None:
        change = self.poll_changes(since, timeout, chassis)
        return None if change is None else change.result

    # ------------------------------------------------------------------ reports

    def register_chassis(self, chassis: Chassis) -> None:
        if chassis.encap not in ENCAPS:
            raise InvalidInput("encap", f"'{chassis.encap}' is not one of {', '.join(ENCAPS)}")
        try:
            ipaddress.ip_address(chassis.ip)
        except ValueError:
            raise InvalidInput("ip", f"'{chassis.ip}' is not an IP address") from None
        if not chassis.name:
            raise InvalidInput("name", "a chassis needs a name")
        with self._lock:
            self._seen[chassis.name] = self.clock()
            if self._chassis.get(chassis.name) == chassis:
                return
            self._chassis[chassis.name] = chassis
        with self.db.write():
            pass  # an empty write moves the generation: agents learn the new endpoint

    def chassis(self) -> dict[str, Chassis]:
        with self._lock:
            return dict(self._chassis)

    def bindings(self) -> dict[str, tuple[str, bool]]:
        """port → (chassis, up) as last reported (runtime view, not in the SB state)."""
        with self._lock:
            return dict(self._bindings)

    def report_port(self, port: str, chassis: str, up: bool) -> None:
        status = "ACTIVE" if up else "DOWN"
        with self.db.read() as session:
            row = session.get(Port, port)
            if row is None:
                raise not_found("port", port)
            if not up and row.binding_host_id not in ("", chassis):
                # a host letting go of a port that already moved (migration): the
                # new host's claim stands; a stale "down" must not pull it back
                return
            rebind = row.binding_host_id != chassis
            restatus = row.status != status
        if rebind or restatus:
            with self.db.write(bump=rebind) as session:
                row = session.get(Port, port)
                if row is None:
                    raise not_found("port", port)
                row.binding_host_id = chassis
                row.status = status
                row.revision_number += 1
        with self._lock:
            self._bindings[port] = (chassis, up)
            self._seen[chassis] = self.clock()

    def report_ports(self, ports: list[tuple[str, bool]], chassis: str) -> None:
        """:meth:`report_port` for many ports in one transaction (an agent claiming a
        thousand ports at start made a thousand requests and transactions); ports
        that do not exist (deleted meanwhile) are skipped."""
        with self.db.read() as session:
            rows = {p: session.get(Port, p) for p, _ in ports}
            todo = [(p, up) for p, up in ports if self._report_needs(rows[p], chassis, up)]
        rebind = any(getattr(rows[p], "binding_host_id", chassis) != chassis for p, _ in todo)
        if todo:
            with self.db.write(bump=rebind) as session:
                for port, up in todo:
                    row = session.get(Port, port)
                    if row is not None and self._report_needs(row, chassis, up):
                        row.binding_host_id = chassis
                        row.status = "ACTIVE" if up else "DOWN"
                        row.revision_number += 1
        with self._lock:
            for port, up in ports:
                if rows.get(port) is not None:
                    self._bindings[port] = (chassis, up)
            self._seen[chassis] = self.clock()

    @staticmethod
    def _report_needs(row: Port | None, chassis: str, up: bool) -> bool:
        """The report changes the port (and is not a stale "down" of a migrated port)."""
        if row is None or (not up and row.binding_host_id not in ("", chassis)):
            return False
        return row.binding_host_id != chassis or row.status != ("ACTIVE" if up else "DOWN")

    def report_installed(self, chassis: str, generation: int) -> None:
        with self.db.write(bump=False) as session:
            identity.report(session, "host", chassis, generation)
        self.heard_from(chassis)

    def report_member_health(self, chassis: str, member_id: str, status: str) -> None:
        if status not in HEALTH_STATUSES:
            raise InvalidInput("status", f"'{status}' is not one of {', '.join(HEALTH_STATUSES)}")
        self.heard_from(chassis)
        with self._lock:
            latest = self._latest()
        monitor = (latest or self.refresh()).monitors.get(member_id)
        if monitor is None:
            return  # the monitor (or member) is gone: a report racing a config change
        if not self._member_needs(chassis, monitor.logical_port, member_id, status):
            return
        with self.db.write() as session:  # bumps: the lb flows change with the status
            if self._member_needs_in(session, chassis, monitor.logical_port, member_id, status):
                set_member_operating_status(session, member_id, status)

    def _member_needs(self, chassis: str, port: str, member_id: str, status: str) -> bool:
        with self.db.read() as session:
            return self._member_needs_in(session, chassis, port, member_id, status)

    @staticmethod
    def _member_needs_in(
        session: Session, chassis: str, port: str, member_id: str, status: str
    ) -> bool:
        """The member exists, its VIF is bound to ``chassis`` and its status differs."""
        row = session.get(Port, port)
        member = session.get(Member, member_id)
        if row is None or member is None or row.binding_host_id != chassis:
            return False
        return member.operating_status != status

    # ------------------------------------------------------------------ stats, heartbeat

    def report_stats(self, chassis: str, stats: dict[str, Any]) -> None:
        if not chassis:
            raise InvalidInput("chassis", "a stats report needs a chassis name")
        now = self.clock()
        with self._lock:
            self._stats[chassis] = Received(dict(stats), now)
            self._seen[chassis] = now

    def heard_from(self, chassis: str) -> None:
        """Record a sign of life of ``chassis`` (any report it sent)."""
        with self._lock:
            self._seen[chassis] = self.clock()

    def last_seen(self) -> dict[str, float]:
        """chassis → wall-clock time (``time.time``) of its last report."""
        with self._lock:
            return dict(self._seen)

    def alive(self, chassis: str) -> bool:
        """Heard from within ``alive_after`` seconds."""
        with self._lock:
            seen = self._seen.get(chassis)
        return seen is not None and self.clock() - seen < self.alive_after

    def host_stats(self) -> dict[str, Received]:
        """chassis → its newest stats report (in memory: empty after a restart)."""
        with self._lock:
            return dict(self._stats)


if TYPE_CHECKING:

    def _is_a_source(service: InMemorySB) -> SBSource:
        return service  # mypy checks the protocol here
