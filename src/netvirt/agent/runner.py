"""The ``netvirt agent`` process: one emulated host's agent and datapath, for real.

Theory of operation
-------------------
The process runs in the root namespace (it reaches the API on 127.0.0.1)
and opens its sockets inside the host's namespace with
``netns.run_in_netns``: the tunnel endpoints bound to the underlay address
(Geneve on 6081 and VXLAN on 4789, so hosts of either encapsulation reach it;
``--encap`` is what it registers), and one ``AfPacketPort`` per plugged
interface (``ifaces.PlugDir``: one file per interface, holding the NB port id).

Threads. The packet loop (the main thread) never waits for the SB:

* the **poller** thread registers the chassis, loads a snapshot, then
  long-polls ``changes`` and queues what it gets;
* the **reporter** thread sends the agent's reports (chassis registration,
  port claims, installed generation) in order, retrying with backoff while
  the SB is unreachable (a newer installed report replaces a queued one);
* the main loop waits on the port fds, the tunnel fds and an eventfd the
  SB threads write to (epoll, short timeout), drains up to a batch per ready
  fd into the agent core, and calls ``Agent.step`` when the poller queued
  something, when plugs changed, and once a second (claims, re-registration).

:class:`QueuedSB` is the ``SBSource`` the agent core sees: ``changes``
returns what the poller queued (never blocks), ``snapshot`` the newest
queued full state, and the report calls only enqueue. When the poller loses
the SB, the next ``changes`` raises once, so the agent resyncs (and reports
its claims again) from the snapshot the poller fetches once the SB is back;
meanwhile the installed flows keep forwarding.

Restart: SIGTERM or SIGINT ends the loop, closes sockets and leaves the plug
directory alone. Nothing is persisted: a new process opens the same ports,
resyncs, reinstalls and claims again; traffic stops only while no process
runs (see docs/agent.md, "Running"). Conntrack state survives a restart only
in a shared store (``--state-store redis://``).

Status: about once a second the process writes a JSON document to the status
file atomically (temporary file + rename), see :meth:`Runner.status`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netvirt.agent.agent import Agent
from netvirt.agent.ifaces import (
    Carry,
    CarryPort,
    CarryTunnel,
    IoPort,
    PlugDir,
    PortTable,
    TunnelIo,
    afpacket_in,
    detect_mtu,
    tunnel_in,
)
from netvirt.agent.physical import Encap, Tunnel
from netvirt.dataplane.ports.base import Frame
from netvirt.southbound.model import Chassis, SBState
from netvirt.southbound.source import SBDelta, SBSource
from netvirt.state.store import StateStore

log = logging.getLogger(__name__)

ENCAPS: tuple[Encap, ...] = ("geneve", "vxlan")
DEFAULT_UNDERLAY_MTU = 1500
LOG_EVERY = 5.0  # seconds between tracebacks of failures at packet rate
MIN_POLL = 0.05  # seconds between polls of a source that answers "nothing new" at once


class SBPending(Exception):
    """The agent asked for a snapshot the poller has not fetched yet."""


class SBLost(Exception):
    """The poller lost the SB: the agent must resync from a new snapshot."""


# -- the SB seen through queues ------------------------------------------------------------------


@dataclass
class Health:
    """How the last calls of one SB thread went."""

    ok: bool | None = None  # None: nothing tried yet
    last_ok: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    failures: int = 0

    def success(self) -> None:
        self.ok, self.last_ok = True, time.time()

    def failure(self, err: BaseException, *, reachable: bool = False) -> None:
        """Record a failed call; ``reachable`` when the SB answered (and refused)."""
        self.ok, self.failures = reachable, self.failures + 1
        self.last_error, self.last_error_at = f"{type(err).__name__}: {err}", time.time()

    def as_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "last_ok": self.last_ok,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "failures": self.failures,
        }


@dataclass(frozen=True)
class _Report:
    kind: str  # chassis | port | installed
    args: tuple[Any, ...]


def _retryable(err: BaseException) -> bool:
    """Refusals (4xx) will not go better by retrying; everything else may."""
    from netvirt.southbound.http import SBRejected

    return not isinstance(err, SBRejected)


class QueuedSB:
    """An ``SBSource`` for the agent core that never blocks (see the module docstring).

    ``remote`` is the real source (``HttpSB``); it is only ever called from
    the poller and reporter threads. ``wake`` is called (from those threads)
    whenever something was queued for the main loop.
    """

    def __init__(
        self,
        remote: SBSource,
        chassis: Chassis,
        wake: Callable[[], None],
        *,
        poll_timeout: float = 10.0,
        backoff: tuple[float, float] = (0.25, 2.0),
    ) -> None:
        self.remote = remote
        self.chassis = chassis
        self.wake = wake
        self.poll_timeout = poll_timeout
        self.backoff = backoff
        self.poll_health = Health()
        self.report_health = Health()
        self._lock = threading.Lock()
        self._queued = threading.Condition(self._lock)
        self._inbox: deque[SBDelta | SBState] = deque()
        self._reports: deque[_Report] = deque()
        self._lost = False  # the poller lost the SB since the agent last resynced
        self._want_snapshot = False
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._poll_loop, name="sb-poller", daemon=True),
            threading.Thread(target=self._report_loop, name="sb-reporter", daemon=True),
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        """Stop both threads: a report in flight may finish, a long-poll is abandoned (the
        poller is a daemon thread; closing the remote source ends its request)."""
        self._stop.set()
        with self._queued:
            self._queued.notify_all()
        reporter = self._threads[1]
        if reporter.is_alive():
            reporter.join(timeout)

    @property
    def connected(self) -> bool:
        return self.poll_health.ok is True and self.report_health.ok is not False

    @property
    def queued_reports(self) -> int:
        with self._lock:
            return len(self._reports)

    # -- what the main loop asks -------------------------------------------------------------

    def snapshot_ready(self) -> bool:
        with self._lock:
            return any(isinstance(item, SBState) for item in self._inbox)

    def pending(self) -> bool:
        """True when a step would find something new (a change, or a lost SB)."""
        with self._lock:
            return bool(self._inbox) or self._lost

    def request_snapshot(self) -> None:
        """The agent needs a snapshot and none is queued: the poller fetches one next."""
        with self._lock:
            self._want_snapshot = True

    # -- SBSource, called by the agent core on the main thread --------------------------------

    def snapshot(self) -> SBState:
        with self._lock:
            states = [i for i, item in enumerate(self._inbox) if isinstance(item, SBState)]
            if not states:
                self._want_snapshot = True
                raise SBPending("no SB snapshot yet (the poller is fetching one)")
            for _ in range(states[-1]):
                self._inbox.popleft()
            state = self._inbox.popleft()
            self._lost = False
            assert isinstance(state, SBState)
            return state

    def changes(self, since: int, timeout: float) -> SBDelta | SBState | None:
        with self._lock:
            if self._lost:
                self._lost = False
                raise SBLost(self.poll_health.last_error or "the SB connection was lost")
            while self._inbox:
                item = self._inbox.popleft()
                if isinstance(item, SBState) or item.generation > since:
                    return item
            return None

    def register_chassis(self, chassis: Chassis) -> None:
        with self._lock:
            # A queued snapshot was fetched right after the poller registered this chassis
            # (a resync calls this just before taking it): registering again is redundant.
            fresh = chassis == self.chassis and any(isinstance(i, SBState) for i in self._inbox)
            self.chassis = chassis
        if not fresh:
            self._enqueue(_Report("chassis", (chassis,)))

    def report_port(self, port: str, chassis: str, up: bool) -> None:
        self._enqueue(_Report("port", (port, chassis, up)))

    def report_installed(self, chassis: str, generation: int) -> None:
        report = _Report("installed", (chassis, generation))
        with self._queued:
            self._reports = deque(r for r in self._reports if r.kind != "installed")
            self._reports.append(report)
            self._queued.notify_all()

    def _enqueue(self, report: _Report) -> None:
        with self._queued:
            self._reports.append(report)
            self._queued.notify_all()

    # -- the poller thread ------------------------------------------------------------------

    def _poll_loop(self) -> None:
        generation: int | None = None
        delay = self.backoff[0]
        while not self._stop.is_set():
            try:
                generation = self._poll_once(generation)
            except Exception as err:
                if self._stop.is_set():
                    return
                log.warning("SB poll failed (retry in %.2fs): %s", delay, err)
                self.poll_health.failure(err)
                generation = None
                with self._lock:
                    self._lost = True
                self.wake()
                self._stop.wait(delay)
                delay = min(delay * 2, self.backoff[1])
                continue
            self.poll_health.success()
            delay = self.backoff[0]

    def _poll_once(self, generation: int | None) -> int:
        with self._lock:
            fetch = generation is None or self._want_snapshot
        if fetch:
            self.remote.register_chassis(self.chassis)
            state = self.remote.snapshot()
            self._push(state)
            return state.generation
        assert generation is not None
        started = time.monotonic()
        change = self.remote.changes(generation, self.poll_timeout)
        if change is None:
            if time.monotonic() - started < MIN_POLL:  # a source that does not long-poll
                self._stop.wait(MIN_POLL)
            return generation
        self._push(change)
        return change.generation

    def _push(self, item: SBDelta | SBState) -> None:
        with self._lock:
            if isinstance(item, SBState):
                self._inbox.clear()  # a full state supersedes everything queued before it
                self._want_snapshot = False
            self._inbox.append(item)
        self.wake()

    # -- the reporter thread ----------------------------------------------------------------

    def _report_loop(self) -> None:
        delay = self.backoff[0]
        while not self._stop.is_set():
            with self._queued:
                while not self._reports and not self._stop.is_set():
                    self._queued.wait()
                if self._stop.is_set():
                    return
                report = self._reports.popleft()
            try:
                self._send(report)
            except Exception as err:
                refused = not _retryable(err)
                self.report_health.failure(err, reachable=refused)
                if refused:
                    log.warning("SB refused %s report %s: %s", report.kind, report.args, err)
                    continue
                log.warning("SB %s report failed (retry in %.2fs): %s", report.kind, delay, err)
                self._requeue(report)
                self._stop.wait(delay)
                delay = min(delay * 2, self.backoff[1])
                continue
            self.report_health.success()
            delay = self.backoff[0]

    def _send(self, report: _Report) -> None:
        if report.kind == "chassis":
            self.remote.register_chassis(*report.args)
        elif report.kind == "port":
            self.remote.report_port(*report.args)
        else:
            self.remote.report_installed(*report.args)

    def _requeue(self, report: _Report) -> None:
        with self._lock:
            newer = report.kind == "installed" and any(r.kind == "installed" for r in self._reports)
            if not newer:
                self._reports.appendleft(report)


# -- configuration ---------------------------------------------------------------------------


@dataclass
class Config:
    """What ``netvirt agent`` is told (see ``cli/agent.py``)."""

    name: str
    underlay_ip: str
    url: str
    token: str
    iface_dir: Path
    netns: str | None = None
    encap: Encap = "geneve"
    underlay_mtu: int | None = None  # None: the MTU of the interface holding underlay_ip
    state_store: str = "memory://"
    status_file: Path | None = None
    poll_timeout: float = 10.0
    scan_interval: float = 0.5
    status_interval: float = 1.0
    step_interval: float = 1.0
    tick: float = 0.1
    batch: int = 64


# -- the process ---------------------------------------------------------------------------


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


class Runner:
    """One agent process; :meth:`run` until :meth:`stop` (see the module docstring).

    ``sb``, ``open_port`` and ``open_tunnel`` replace the HTTP source, AF_PACKET
    ports and UDP tunnels (tests use in-memory twins).
    """

    def __init__(
        self,
        config: Config,
        *,
        sb: SBSource | None = None,
        store: StateStore | None = None,
        open_port: Callable[[str], IoPort] | None = None,
        open_tunnel: Callable[[Encap, str, int], TunnelIo] | None = None,
    ) -> None:
        self.config = config
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._remote = sb if sb is not None else self._http_sb()
        chassis = Chassis(config.name, config.encap, config.underlay_ip)
        self.sb = QueuedSB(self._remote, chassis, self.wake, poll_timeout=config.poll_timeout)
        if store is None:
            from netvirt.state import open_store

            store = open_store(config.state_store)
        self.store = store
        self.open_port = open_port or (lambda iface: afpacket_in(config.netns, iface))
        self.open_tunnel = open_tunnel or (
            lambda encap, ip, mtu: tunnel_in(config.netns, encap, ip, mtu)
        )
        self.carry = Carry()
        self.tunnels: dict[Encap, CarryTunnel] = {e: CarryTunnel(e, self.carry) for e in ENCAPS}
        self.tunnel_errors: dict[str, str] = {}
        self.underlay_mtu: int | None = config.underlay_mtu
        self.plug_dir = PlugDir(config.iface_dir)
        self.ports = PortTable(self.open_port)
        tunnels: dict[str, Tunnel] = {str(e): t for e, t in self.tunnels.items()}
        self.agent = Agent(
            config.name,
            config.encap,
            config.underlay_ip,
            self.sb,
            self.store,
            (),
            tunnels,
            time.time,
        )
        self.stats = LoopStats()
        self.started_at = time.time()
        self._stopping = False
        self._running = False
        self._epoll: select.epoll | None = None
        self._handlers = _Handlers()
        self._plugs_changed = False
        self._logged_at = -LOG_EVERY
        self._next_scan = self._next_step = self._next_status = self._next_tunnel = 0.0
        self._next_sweep = time.monotonic() + 10.0

    def _http_sb(self) -> SBSource:
        from netvirt.southbound.http import HttpSB

        return HttpSB(self.config.url, self.config.token)

    # -- lifecycle --------------------------------------------------------------------------

    def wake(self) -> None:
        """Interrupt the loop's wait (any thread, signal handlers too)."""
        with contextlib.suppress(OSError):
            os.eventfd_write(self._wake_fd, 1)

    def stop(self) -> None:
        """Ask the loop to end (safe from a signal handler)."""
        self._stopping = True
        self.wake()

    def run(self) -> int:
        """Run until :meth:`stop`; returns the process exit code."""
        self.start()
        try:
            while not self._stopping:
                self.run_once()
        finally:
            self.close()
        return 0

    def start(self) -> None:
        """Start the SB threads and the wait set (:meth:`run` does it; tests drive
        :meth:`run_once` themselves)."""
        self._running = True
        self.sb.start()
        self._rebuild_epoll()
        log.info(
            "agent %s: netns %s, underlay %s (%s), plug dir %s",
            self.config.name,
            self.config.netns or "-",
            self.config.underlay_ip,
            self.config.encap,
            self.config.iface_dir,
        )

    def run_once(self, timeout: float | None = None) -> None:
        """One loop iteration: wait, handle ready fds, then the periodic work."""
        assert self._epoll is not None
        wait = self.config.tick if timeout is None else timeout
        for fd, _events in self._epoll.poll(wait):
            self._ready(fd)
        self.stats.iterations += 1
        now = time.monotonic()
        if now >= self._next_tunnel:
            self._guarded("opening tunnels", self._open_tunnels, now)
        if now >= self._next_scan:
            self._guarded("plug scan", self._scan, now)
        self._guarded("agent step", self._control, now)
        if now >= self._next_sweep:
            self._guarded("state sweep", self._sweep, now)
        if now >= self._next_status:
            self._next_status = now + self.config.status_interval
            self._guarded("status", lambda _now: self.write_status(), now)

    def _guarded(self, what: str, task: Callable[[float], None], now: float) -> None:
        """Run periodic work; a failure is counted and logged, never the end of the loop
        (each task schedules its next run before it starts, so a failing one does not spin)."""
        try:
            task(now)
        except Exception as err:
            self.stats.error(f"{what}: {type(err).__name__}: {err}")
            log.exception("%s failed", what)

    def close(self) -> None:
        """Stop the SB threads, close every socket; the plug directory is left alone."""
        self._stopping = True
        self._running = False
        self.sb.stop()
        self.write_status()  # the last counters, with "running": false
        self.ports.close_all()
        for carry in self.tunnels.values():
            if carry.tunnel is not None:
                carry.tunnel.close()
                carry.tunnel = None
        if self._epoll is not None:
            self._epoll.close()
            self._epoll = None
        close = getattr(self._remote, "close", None)
        if close is not None:
            close()
        self.store.close()
        os.close(self._wake_fd)
        log.info("agent %s stopped", self.config.name)

    # -- packets ----------------------------------------------------------------------------

    def _rebuild_epoll(self) -> None:
        if self._epoll is not None:
            self._epoll.close()
        self._epoll = select.epoll()
        self._epoll.register(self._wake_fd, select.EPOLLIN)
        handlers = _Handlers()
        for iface, entry in self.ports.open.items():
            handlers.ports[entry.port.fileno()] = iface
        for encap, carry in self.tunnels.items():
            if carry.tunnel is not None:
                handlers.tunnels[carry.tunnel.fileno()] = encap
        for fd in (*handlers.ports, *handlers.tunnels):
            self._epoll.register(fd, select.EPOLLIN)
        self._handlers = handlers

    def _ready(self, fd: int) -> None:
        if fd == self._wake_fd:
            with contextlib.suppress(BlockingIOError):
                os.eventfd_read(self._wake_fd)
            return
        iface = self._handlers.ports.get(fd)
        try:
            if iface is not None:
                self._from_port(iface)
            elif fd in self._handlers.tunnels:
                self._from_tunnel(self._handlers.tunnels[fd])
        except Exception as err:  # a bug or a failing state store: count it, keep forwarding
            self.stats.error(f"{type(err).__name__}: {err}")
            now = time.monotonic()
            if now - self._logged_at >= LOG_EVERY:  # at packet rate: log now and then
                self._logged_at = now
                log.exception("packet handling failed (%d errors so far)", self.stats.errors)
        finally:
            self.carry.current = None

    def _from_port(self, iface: str) -> None:
        entry = self.ports.open.get(iface)
        if entry is None:
            return
        try:
            frames = entry.port.recv_batch(self.config.batch)
        except OSError as err:  # the interface went away or down: reopen at the next scan
            self.ports.fail(iface, err)
            self.agent.unplug(iface)
            self._plugs_changed = True
            self._rebuild_epoll()
            return
        self.ingest(iface, frames)

    def ingest(self, iface: str, frames: Iterable[Frame]) -> None:
        """Hand frames from a local interface to the agent: plain frames in batches, frames
        with offload metadata one by one (their outputs inherit it, see ``ifaces.Carry``)."""
        plain: list[bytes] = []
        for frame in frames:
            if frame.vnet is None:
                plain.append(frame.data)
                continue
            if plain:
                self.agent.handle_frames(iface, plain)
                plain = []
            self.carry.current = frame
            try:
                self.agent.handle_frames(iface, (frame.data,))
            finally:
                self.carry.current = None
        if plain:
            self.agent.handle_frames(iface, plain)

    def _from_tunnel(self, encap: Encap) -> None:
        tunnel = self.tunnels[encap].tunnel
        if tunnel is None:
            return
        for packet in tunnel.recv_batch(self.config.batch):
            self.carry.current = packet.frame
            try:
                self.agent.handle_decapsulated(
                    packet.vni, packet.ingress, packet.egress, packet.frame.data
                )
            finally:
                self.carry.current = None

    # -- periodic work ----------------------------------------------------------------------

    def _open_tunnels(self, now: float) -> None:
        self._next_tunnel = now + 1.0
        missing = [e for e, carry in self.tunnels.items() if carry.tunnel is None]
        if not missing:
            self._next_tunnel = float("inf")
            return
        config = self.config
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
        self._next_scan = now + self.config.scan_interval
        change = self.ports.sync(self.plug_dir.scan())
        if not change:
            return
        for iface in change.closed:
            self.agent.unplug(iface)
        for _iface, entry in change.opened:
            self.agent.plug(CarryPort(entry.port, self.carry), entry.port_id)
        self._plugs_changed = True
        self._rebuild_epoll()

    def _control(self, now: float) -> None:
        """Step the agent when the SB moved, plugs changed, or the periodic step is due."""
        for _ in range(16):
            if self.agent.mirror.generation is None:
                if not self.sb.snapshot_ready():
                    self.sb.request_snapshot()
                    return
            elif not (self.sb.pending() or self._plugs_changed or now >= self._next_step):
                return
            self._plugs_changed = False
            self._next_step = now + self.config.step_interval
            result = self.agent.step(0.0)
            self.stats.steps += 1
            if result.error is not None and not result.error.startswith("SBLost"):
                self.stats.error(f"southbound: {result.error}")

    def _sweep(self, now: float) -> None:
        self._next_sweep = now + 10.0
        sweep = getattr(self.store, "sweep", None)
        if sweep is not None:
            sweep()

    # -- status -----------------------------------------------------------------------------

    def status(self) -> dict[str, object]:
        """The status document (what ``--status-file`` holds)."""
        counters = self.agent.counters()
        generation = counters["generation"]
        assert isinstance(generation, dict)
        bindings = self.agent.bindings
        plugged = {iface: entry.port_id for iface, entry in sorted(self.ports.open.items())}
        return {
            "name": self.config.name,
            "pid": os.getpid(),
            "running": self._running and not self._stopping,
            "started_at": self.started_at,
            "updated_at": time.time(),
            "netns": self.config.netns,
            "encap": self.config.encap,
            "underlay_ip": self.config.underlay_ip,
            "underlay_mtu": self.underlay_mtu,
            "sb_generation": generation["sb"],
            "installed_generation": generation["installed"],
            "ports": plugged,
            "bound": {} if bindings is None else {v: k for k, v in sorted(bindings.local.items())},
            "unplugged": dict(sorted(self.ports.failed.items())),
            "ignored": {} if bindings is None else dict(bindings.ignored),
            "sb_connected": self.sb.connected,
            "sb": {
                "poll": self.sb.poll_health.as_dict(),
                "report": self.sb.report_health.as_dict(),
                "queued_reports": self.sb.queued_reports,
            },
            "tunnels": {
                encap: {"open": carry.tunnel is not None, "error": self.tunnel_errors.get(encap)}
                for encap, carry in self.tunnels.items()
            },
            "last_error": self._last_error(),
            "loop": {
                "iterations": self.stats.iterations,
                "steps": self.stats.steps,
                "errors": self.stats.errors,
            },
            "counters": counters,
            "io": self._io_counters(),
        }

    def _last_error(self) -> str | None:
        """The newest error of the loop or the SB threads."""
        candidates = [
            (self.stats.last_error_at, self.stats.last_error),
            (self.sb.poll_health.last_error_at, self.sb.poll_health.last_error),
            (self.sb.report_health.last_error_at, self.sb.report_health.last_error),
        ]
        known = [(at, msg) for at, msg in candidates if at is not None and msg]
        return max(known)[1] if known else None

    def _io_counters(self) -> dict[str, object]:
        ports = {i: e.port.counters.as_dict() for i, e in sorted(self.ports.open.items())}
        tunnels = {
            encap: carry.tunnel.counters.as_dict()
            for encap, carry in self.tunnels.items()
            if carry.tunnel is not None
        }
        return {"ports": ports, "tunnels": tunnels}

    def write_status(self) -> None:
        """Write the status file atomically (no-op without one); never raises."""
        path = self.config.status_file
        if path is None:
            return
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(self.status(), indent=1, sort_keys=True, default=str))
            os.replace(tmp, path)
        except OSError as err:
            log.warning("cannot write status file %s: %s", path, err)
            with contextlib.suppress(OSError):
                tmp.unlink()
