"""The datapath's event loop: ports, tunnels and the forwarder of one host.

Theory of operation
-------------------
:class:`DatapathLoop` owns everything that moves packets on a host: the
tunnel endpoints bound to the underlay address inside the host's namespace
(Geneve on 6081 and VXLAN on 4789, so hosts of either encapsulation reach
it), one port per plugged interface (``ifaces.PlugDir``: one file per
interface naming its NB port; AF_PACKET or TAP), and the
:class:`~netvirt.agent.forwarder.Forwarder` with what is installed. Its loop
waits on the port fds, the tunnel fds, an eventfd and an inotify watch of the
plug directory (epoll, short timeout; a plug wakes it at once, ``dirwatch``),
drains up to a batch per ready fd into the forwarder, then runs periodic
work (reopening tunnels, scanning the plug directory, state sweeps, the
status file) and whatever its subclass adds in :meth:`DatapathLoop.periodic`.
The process's garbage-collection pauses are in its status (``gcpause``).

Two ways to run it:

* :class:`DatapathProcess` (``netvirt datapath``) adds the control socket
  (``agent.dpctl``): an agent in another process installs flows through it.
  With no agent connected the loop keeps forwarding with what is installed;
  that is what makes an agent restart invisible to traffic.
* ``runner.Runner`` (``netvirt agent`` without ``--datapath``) runs the agent
  core in the same loop (one process, as in tests).

Restart of the datapath itself: nothing is persisted; a new process opens
the same ports, an agent installs the flows again. Conntrack state survives
only in a shared store (``--state-store redis://``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from netvirt.agent import gcpause
from netvirt.agent.counters import fold_offloaded, fold_row
from netvirt.agent.dirwatch import DirWatch
from netvirt.agent.dpctl import ControlServer
from netvirt.agent.forwarder import Forwarder
from netvirt.agent.ifaces import (
    IoPort,
    PlugDir,
    PortTable,
    TunnelIo,
    TunnelSlot,
    afpacket_in,
    detect_mtu,
    tunnel_in,
)
from netvirt.agent.physical import Encap, PhysicalState, Tunnel
from netvirt.agent.process import LoopProcess
from netvirt.dataplane.classifier import Delta
from netvirt.dataplane.fastpath import FlowCache
from netvirt.dataplane.flow import Rule
from netvirt.dataplane.ports.base import Frame
from netvirt.state.store import StateStore

if TYPE_CHECKING:
    from netvirt.dataplane.offload.manager import KernelOffload

# seconds a kernel-served flow goes without its one frame through the slow path (the
# user-space cache's 0.5 s would reorder a bulk TCP flow behind the slow path 4x as often)
OFFLOAD_MAX_AGE = 2.0

log = logging.getLogger(__name__)

ENCAPS: tuple[Encap, ...] = ("geneve", "vxlan")
DEFAULT_UNDERLAY_MTU = 1500
LOG_EVERY = 5.0  # seconds between tracebacks of failures at packet rate
SWEEP_INTERVAL = 10.0
STORE_POLL = 0.01  # seconds between timeout checks while store round trips are in flight


@dataclass
class DatapathConfig:
    """What a host's datapath is told (``netvirt datapath`` / ``netvirt agent``)."""

    name: str
    underlay_ip: str
    iface_dir: Path
    netns: str | None = None
    encap: Encap = "geneve"
    underlay_mtu: int | None = None  # None: the MTU of the interface holding underlay_ip
    state_store: str = "memory://"
    state_cache: float = 0.5  # seconds a shared store's reads may serve (state/cached.py)
    state_fail: str = "closed"  # store unreachable: drop (closed) or pass as established (open)
    status_file: Path | None = None
    control: Path | None = None  # the control socket (DatapathProcess)
    scan_interval: float = 0.5
    status_interval: float = 1.0
    tick: float = 0.1
    batch: int = 64
    flow_cache: int = 65_536  # entries of the datapath's flow cache (0: every packet slow)
    gc_tuned: bool = False  # process-wide: young threshold raised, heap frozen after installs
    # exact flows between local ports served in the kernel (offload/): on by default; a
    # datapath that cannot load it (no root, clang or libbpf) runs without and says why
    offload: bool = True
    # new TCP connections made by the kernel from their SYN (offload/templates.py; local
    # state only): None = NETVIRT_SYN_TEMPLATES or the default (on)
    syn_templates: bool | None = None


@dataclass
class LoopStats:
    iterations: int = 0
    steps: int = 0
    errors: int = 0
    last_error: str | None = None
    last_error_at: float | None = None

    def error(self, message: str) -> None:
        self.errors += 1
        self.last_error, self.last_error_at = message, time.time()


@dataclass
class _Handlers:
    ports: dict[int, str] = field(default_factory=dict)  # fd -> iface
    tunnels: dict[int, Encap] = field(default_factory=dict)  # fd -> encap
    other: set[int] = field(default_factory=set)  # fds of subclasses (control socket)


class DatapathLoop(LoopProcess):
    """One host's packet loop; see the module docstring.

    ``store``, ``open_port`` and ``open_tunnel`` replace the configured state
    store, AF_PACKET ports and UDP tunnels (tests use in-memory twins)."""

    def __init__(
        self,
        config: DatapathConfig,
        *,
        store: StateStore | None = None,
        open_port: Callable[[str], IoPort] | None = None,
        open_tunnel: Callable[[Encap, str, int], TunnelIo] | None = None,
    ) -> None:
        super().__init__()
        self.dp_config = config
        self.status_file = config.status_file
        if store is None:
            from netvirt.state import DATAPATH_WRITE_BEHIND, open_store

            store = open_store(config.state_store, DATAPATH_WRITE_BEHIND)
            if not getattr(store, "supports_submit", True):
                # the cluster: its synchronous round trips on a worker thread, so the
                # loop parks store-bound packets instead of waiting (state/threaded.py)
                from netvirt.state.threaded import ThreadedStore

                store = ThreadedStore(store)
            if config.state_cache > 0 and not config.state_store.startswith("memory:"):
                from netvirt.dataplane.nf.codec import cacheable_record
                from netvirt.state.cached import CachedStore

                store = CachedStore(store, config.state_cache, cacheable=cacheable_record)
        self.store = store
        self.open_port = open_port or (lambda iface: afpacket_in(config.netns, iface))
        self.open_tunnel = open_tunnel or (
            lambda encap, ip, mtu: tunnel_in(config.netns, encap, ip, mtu)
        )
        self.tunnels: dict[Encap, TunnelSlot] = {e: TunnelSlot(e) for e in ENCAPS}
        self.tunnel_errors: dict[str, str] = {}
        self.underlay_mtu: int | None = config.underlay_mtu
        self.plug_dir = PlugDir(config.iface_dir)
        self.plug_watch = DirWatch(config.iface_dir)  # a plug wakes the loop (else: tick)
        self.ports = PortTable(self.open_port)
        tunnels: dict[str, Tunnel] = {str(e): t for e, t in self.tunnels.items()}
        cache = FlowCache(capacity=config.flow_cache) if config.flow_cache > 0 else None
        self.forwarder = Forwarder(
            self.store,
            tunnels,
            time.time,
            encap=config.encap,
            flow_cache=cache,
            state_fail=config.state_fail,
        )
        self.forwarder.gateways.clock = time.monotonic  # liveness must not follow wall time
        self.offload: KernelOffload | None = None
        self.offload_error: str | None = None if config.offload else "off"
        if config.offload:
            self._start_offload(cache)
        self.stats = LoopStats()
        self.started_at = time.time()
        self._epoll: select.epoll | None = None
        self._handlers = _Handlers()
        # the asynchronous state store's socket in the wait set: ((fd, serial), mask)
        self._store_registered: tuple[tuple[int, int], int] | None = None
        self._store_fd: int | None = None
        self._logged_at = -LOG_EVERY
        self._next_scan = self._next_status = self._next_tunnel = 0.0
        self._next_sweep = time.monotonic() + SWEEP_INTERVAL
        self.gc_pauses = gcpause.GcPauses()

    def _start_offload(self, cache: FlowCache | None) -> None:
        """Load the kernel offload (``dataplane/offload``); without it, say why and go on."""
        if cache is None:
            self.offload_error = "no flow cache (--flow-cache 0)"
            return
        from netvirt.dataplane.offload.bpf import OffloadUnavailable
        from netvirt.dataplane.offload.manager import KernelOffload

        try:
            self.offload = KernelOffload(
                self._offload_max_age(cache),
                self.dp_config.netns,
                self.forwarder.offload_blocked,
                time.time,
                syn_templates=self.dp_config.syn_templates,
            )
        except OffloadUnavailable as err:
            self.offload_error = str(err)
            log.warning("no kernel offload: %s", err)
            return
        cache.attach(self.offload)
        log.info("kernel offload on (exact flows between local ports)")

    def _offload_max_age(self, cache: FlowCache) -> float:
        """How long a kernel entry serves before one frame revalidates it. With NF state in
        a shared store another host may change a connection: the kernel then keeps the
        window the user-space cache promises (docs/stateless-nf.md), not the longer one
        that only spares local-state bulk flows reordering."""
        if self.dp_config.state_store.startswith("memory:"):
            return OFFLOAD_MAX_AGE
        return min(OFFLOAD_MAX_AGE, cache.max_age)

    def _close_offload(self) -> None:
        offload, self.offload = self.offload, None
        if offload is not None:
            offload.close()

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Build the wait set (:meth:`run` does it; tests drive :meth:`run_once`)."""
        self._running = True
        self._rebuild_epoll()
        config = self.dp_config
        log.info(
            "datapath %s: netns %s, underlay %s (%s), plug dir %s",
            config.name,
            config.netns or "-",
            config.underlay_ip,
            config.encap,
            config.iface_dir,
        )

    def run_once(self, timeout: float | None = None) -> None:
        """One loop iteration: wait, handle ready fds, then the periodic work."""
        assert self._epoll is not None
        wait = self.dp_config.tick if timeout is None else timeout
        store = self.forwarder.jobs.asynchronous
        if store is not None and store.in_flight():
            wait = min(wait, STORE_POLL)  # replies wake us; this bounds timeout detection
        for fd, events in self._epoll.poll(wait):
            self._ready(fd, events)
        self.stats.iterations += 1
        now = time.monotonic()
        if store is not None:
            self._guarded("state store", self._store_tick, now)
        if now >= self._next_tunnel:
            self._guarded("opening tunnels", self._open_tunnels, now)
        if now >= self._next_scan or self.plug_dir.changed():  # a new plug: at once
            self._guarded("plug scan", self._scan, now)
        if self.forwarder.health.active:
            self._guarded("health checks", self._health, now)
        self._guarded("gateway hellos", self.forwarder.gateway_tick, now)
        if self.offload is not None:  # (kernel connections: reports, SNAT ports, the sweep)
            self._guarded("kernel offload", self.offload.tick, now)
        self.periodic(now)
        if now >= self._next_sweep:
            self._guarded("state sweep", self._sweep, now)
        if now >= self._next_status:
            self._next_status = now + self.dp_config.status_interval
            self._guarded("status", lambda _now: self.write_status(), now)

    def periodic(self, now: float) -> None:
        """Subclasses' work once per iteration (the in-process agent steps here)."""

    def _guarded(self, what: str, task: Callable[[float], None], now: float) -> None:
        """Run periodic work; a failure is counted and logged, never the end of the loop
        (each task schedules its next run before it starts, so a failing one does not spin)."""
        try:
            task(now)
        except Exception as err:
            self.stats.error(f"{what}: {type(err).__name__}: {err}")
            log.exception("%s failed", what)

    def close(self) -> None:
        """Close every socket; the plug directory is left alone."""
        self._stopping = True
        self._running = False
        self.write_status()  # the last counters, with "running": false
        self._guarded("gateway goodbye", lambda _now: self.forwarder.gateway_goodbye(), 0.0)
        self._guarded("parked work", lambda _now: self.forwarder.jobs.drain(), 0.0)
        if self.offload is not None:  # before the ports: the kernel stops serving first
            self._guarded("kernel offload", lambda _now: self._close_offload(), 0.0)
        self.ports.close_all()
        for carry in self.tunnels.values():
            if carry.tunnel is not None:
                carry.tunnel.close()
                carry.tunnel = None
        if self._epoll is not None:
            self._epoll.close()
            self._epoll = None
        self.store.close()
        self.close_wake()
        self.plug_watch.close()
        self.gc_pauses.close()
        log.info("datapath %s stopped", self.dp_config.name)

    # -- packets ----------------------------------------------------------------------------

    def extra_fds(self) -> Iterable[int]:
        """More fds to wait on (subclasses); :meth:`extra_ready` handles them."""
        return ()

    def extra_ready(self, fd: int) -> None:
        """A readable fd of :meth:`extra_fds`."""

    def _rebuild_epoll(self) -> None:
        if self._epoll is not None:
            self._epoll.close()
        self._epoll = select.epoll()
        self._epoll.register(self._wake_fd, select.EPOLLIN)
        if self.plug_watch.fd is not None:
            self._epoll.register(self.plug_watch.fd, select.EPOLLIN)
        self._store_registered = None  # registered again at the next store tick
        self._store_fd = None
        handlers = _Handlers()
        for iface, entry in self.ports.open.items():
            handlers.ports[entry.port.fileno()] = iface
        for encap, carry in self.tunnels.items():
            if carry.tunnel is not None:
                handlers.tunnels[carry.tunnel.fileno()] = encap
        handlers.other = set(self.extra_fds())
        for fd in (*handlers.ports, *handlers.tunnels, *handlers.other):
            self._epoll.register(fd, select.EPOLLIN)
        self._handlers = handlers

    def _store_tick(self, now: float) -> None:
        """Fail round trips past the store's timeout, then (re)register the store's socket
        when it changed (a new connection) or wants to be told when it can write."""
        store = self.forwarder.jobs.asynchronous
        if store is None or self._epoll is None:
            return
        if store.in_flight():
            store.time_out(now)
        handle = store.handle()
        mask = select.EPOLLIN | (select.EPOLLOUT if store.wants_write() else 0)
        registered = (handle, mask) if handle is not None else None
        if registered == self._store_registered:
            return
        if self._store_registered is not None:
            old = self._store_registered[0][0]
            with contextlib.suppress(OSError):  # closed with its connection: already gone
                self._epoll.unregister(old)
            self._store_fd = None
        if handle is not None:
            self._epoll.register(handle[0], mask)
            self._store_fd = handle[0]
        self._store_registered = registered

    def _ready(self, fd: int, events: int = select.EPOLLIN) -> None:
        if fd == self._wake_fd:
            self.drain_wake()
            return
        if fd == self._store_fd:
            self._from_store(events)
            return
        if fd == self.plug_watch.fd:
            if self.plug_watch.drain():  # something changed in the plug directory: look now
                self._guarded("plug scan", self._scan, time.monotonic())
            return
        iface = self._handlers.ports.get(fd)
        try:
            if iface is not None:
                self._from_port(iface)
                if self.forwarder.health_pending:  # answers to the VM's replies go out now
                    self.forwarder.health_tick()
            elif fd in self._handlers.tunnels:
                self._from_tunnel(self._handlers.tunnels[fd])
            elif fd in self._handlers.other:
                self.extra_ready(fd)
        except Exception as err:  # a bug or a failing state store: count it, keep forwarding
            self.stats.error(f"{type(err).__name__}: {err}")
            now = time.monotonic()
            if now - self._logged_at >= LOG_EVERY:  # at packet rate: log now and then
                self._logged_at = now
                log.exception("packet handling failed (%d errors so far)", self.stats.errors)

    def _from_store(self, events: int) -> None:
        """Replies from the state store: parked slow-path work resumes (and sends)."""
        store = self.forwarder.jobs.asynchronous
        if store is None:
            return
        try:
            if events & select.EPOLLOUT:
                store.on_writable()
            if events & (select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP):
                store.on_readable()
        except Exception as err:  # a bug in resumed work: count it, keep forwarding
            self.stats.error(f"{type(err).__name__}: {err}")
            log.exception("resuming work parked on the state store failed")

    def _from_port(self, iface: str) -> None:
        entry = self.ports.open.get(iface)
        if entry is None:
            return
        try:
            frames = entry.port.recv_batch(self.dp_config.batch)
        except OSError as err:  # the interface went away or down: reopen at the next scan
            self.ports.fail(iface, err)
            self.forwarder.unplug(iface)
            self.plugs_changed()
            self._rebuild_epoll()
            return
        self.ingest(iface, frames)

    def ingest(self, iface: str, frames: Iterable[Frame]) -> None:
        """Hand a batch from a local interface to the forwarder (frames keep their offload
        metadata; outputs that are rewrites of a frame inherit it)."""
        self.forwarder.handle_frames(iface, list(frames))

    def _from_tunnel(self, encap: Encap) -> None:
        tunnel = self.tunnels[encap].tunnel
        if tunnel is None:
            return
        packets = tunnel.recv_batch(self.dp_config.batch)
        if packets:
            self.forwarder.handle_decapsulated_batch(
                [(p.vni, p.ingress, p.egress, p.frame) for p in packets]
            )

    # -- periodic work ----------------------------------------------------------------------

    def plugs_changed(self) -> None:
        """The plugged set changed (subclasses tell their agent)."""

    def _health(self, now: float) -> None:
        deadline = self.forwarder.health.next_deadline()
        if deadline is not None and deadline <= self.forwarder.clock():
            self.forwarder.health_tick()

    def _open_tunnels(self, now: float) -> None:
        self._next_tunnel = now + 1.0
        missing = [e for e, carry in self.tunnels.items() if carry.tunnel is None]
        if not missing:
            self._next_tunnel = float("inf")
            return
        config = self.dp_config
        if self.underlay_mtu is None:
            self.underlay_mtu = detect_mtu(config.netns, config.underlay_ip)
        mtu = self.underlay_mtu or DEFAULT_UNDERLAY_MTU
        opened = False
        for encap in missing:
            try:
                self.tunnels[encap].tunnel = self.open_tunnel(encap, config.underlay_ip, mtu)
            except Exception as err:  # OSError, or NetnsError for a missing namespace
                message = f"cannot open the {encap} endpoint on {config.underlay_ip}: {err}"
                if self.tunnel_errors.get(encap) != message:
                    log.warning("%s (retrying)", message)
                    if encap == config.encap:
                        self.stats.error(message)
                self.tunnel_errors[encap] = message
                continue
            self.tunnel_errors.pop(encap, None)
            opened = True
            log.info("%s endpoint open on %s (underlay MTU %d)", encap, config.underlay_ip, mtu)
        if opened:
            self._rebuild_epoll()

    def _scan(self, now: float) -> None:
        self._next_scan = now + self.dp_config.scan_interval
        change = self.ports.sync(self.plug_dir.scan())
        if not change:
            return
        offload = self.offload
        for iface in change.closed:
            self.forwarder.unplug(iface)
            if offload is not None:
                offload.port_closed(iface)
        for iface, entry in change.opened:
            self.forwarder.plug(entry.port, entry.port_id)
            if offload is not None:
                offload.port_opened(iface, entry.port)
        self.plugs_changed()
        self._rebuild_epoll()

    def _sweep(self, now: float) -> None:
        self._next_sweep = now + SWEEP_INTERVAL
        sweep = getattr(self.store, "sweep", None)
        if sweep is not None:
            sweep()

    # -- status -----------------------------------------------------------------------------

    def datapath_status(self) -> dict[str, Any]:
        """The datapath's part of a status document."""
        config = self.dp_config
        return {
            "name": config.name,
            "pid": os.getpid(),
            "running": self.running,
            "started_at": self.started_at,
            "updated_at": time.time(),
            "netns": config.netns,
            "encap": config.encap,
            "underlay_ip": config.underlay_ip,
            "underlay_mtu": self.underlay_mtu,
            "installed_generation": self.forwarder.generation,
            "ports": {i: e.port_id for i, e in sorted(self.ports.open.items())},
            "unplugged": dict(sorted(self.ports.failed.items())),
            "tunnels": {
                encap: {"open": carry.tunnel is not None, "error": self.tunnel_errors.get(encap)}
                for encap, carry in self.tunnels.items()
            },
            "loop": {
                "iterations": self.stats.iterations,
                "steps": self.stats.steps,
                "errors": self.stats.errors,
                "plug_events": self.plug_watch.events,
                "plug_watch": self.plug_watch.fd is not None,
            },
            "io": self.io_counters(),
            "gc": self.gc_pauses.as_dict(),
            "offload": self.offload_status(),
        }

    def offload_status(self) -> dict[str, object]:
        """The kernel offload's counters (map reads, a walk of its entries), or why none."""
        if self.offload is None:
            return {"error": self.offload_error}
        return self.offload.stats()

    def status(self) -> dict[str, object]:
        """The status document (what ``--status-file`` holds)."""
        doc = self.datapath_status()
        offload = doc["offload"]
        doc["counters"] = self.counters(offload if isinstance(offload, dict) else None)
        doc["last_error"] = self.stats.last_error
        return doc

    def counters(self, kernel: dict[str, object] | None = None) -> dict[str, object]:
        """The forwarder's counters, with the frames the kernel offload served folded into
        the ports' and the tunnel's traffic (a port's counters are what crossed it,
        whoever forwarded it; the tunnel's rx/tx are what the kernel decapsulated and
        encapsulated). ``kernel``: the offload's counters when the caller has them."""
        doc = self.forwarder.counters()
        if self.offload is not None:
            kernel = self.offload.stats() if kernel is None else kernel
            doc["ports"] = fold_offloaded(doc["ports"], kernel.get("ports"))
            doc["tunnel"] = fold_row(doc["tunnel"], kernel.get("tunnel"))
        return doc

    def io_counters(self) -> dict[str, object]:
        ports = {i: e.port.counters.as_dict() for i, e in sorted(self.ports.open.items())}
        tunnels = {
            encap: carry.tunnel.counters.as_dict()
            for encap, carry in self.tunnels.items()
            if carry.tunnel is not None
        }
        return {"ports": ports, "tunnels": tunnels}


class DatapathProcess(DatapathLoop):
    """``netvirt datapath``: the packet loop plus the control socket for an agent."""

    def __init__(
        self,
        config: DatapathConfig,
        *,
        store: StateStore | None = None,
        open_port: Callable[[str], IoPort] | None = None,
        open_tunnel: Callable[[Encap, str, int], TunnelIo] | None = None,
    ) -> None:
        if config.control is None:
            raise ValueError("a datapath process needs a control socket path")
        super().__init__(config, store=store, open_port=open_port, open_tunnel=open_tunnel)
        if config.gc_tuned:
            gcpause.tune()
        self.events: list[object] = []
        self.control = ControlServer(
            config.control,
            {
                "hello": self._hello,
                "poll": self._poll,
                "rules": self.forwarder.rules,
                "install": self._install,
                "counters": self._counters,
                "events": self._events,
            },
        )

    def extra_fds(self) -> Iterable[int]:
        return self.control.fds()

    def extra_ready(self, fd: int) -> None:
        if self.control.ready(fd):
            self._rebuild_epoll()

    def close(self) -> None:
        self.control.close()
        super().close()

    # -- control ops ------------------------------------------------------------------------

    def _hello(self) -> dict[str, object]:
        return self._poll() | {"chassis": self.dp_config.name}

    def _poll(self) -> dict[str, object]:
        fwd = self.forwarder
        return {
            "version": fwd.rule_version,
            "generation": fwd.generation,
            "plugs": fwd.plugged(),
            "health": fwd.take_health_events(),
        }

    def _install(
        self, physical: PhysicalState, add: list[Rule], remove: list[Rule]
    ) -> dict[str, object]:
        delta: Delta = self.forwarder.install(physical, add, remove)
        if self.dp_config.gc_tuned:
            gcpause.settle()  # the rules just built join the permanent generation
        self.write_status()  # the new generation is visible at once
        self.forwarder.health_tick()  # new members are probed at once
        return {
            "added": delta.added,
            "removed": delta.removed,
            "version": self.forwarder.rule_version,
            "generation": self.forwarder.generation,
        }

    def _counters(self) -> dict[str, object]:
        return self.counters() | {"io": self.io_counters()}

    def _events(self) -> list[object]:
        events, self.events = self.events, []
        return events

    def status(self) -> dict[str, object]:
        doc = super().status()
        doc["control"] = {
            "agent_connected": self.control.client is not None,
            **self.control.stats,
        }
        return doc
