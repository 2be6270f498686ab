"""The SB seen through queues, and ``netvirt agent`` in one process.

Theory of operation
-------------------
:class:`QueuedSB` is the ``SBSource`` the agent core sees in a real process;
two threads talk to the SB service so the loop never waits for it:

* the **poller** thread registers the chassis, loads a snapshot, then
  long-polls ``changes`` and queues what it gets;
* the **reporter** thread sends the agent's reports (chassis registration,
  port claims, installed generation) in order, retrying with backoff while
  the SB is unreachable (a newer installed report replaces a queued one).

``changes`` returns what the poller queued (never blocks), ``snapshot`` the
newest queued full state, and the report calls only enqueue. When the poller
loses the SB, the next ``changes`` raises once, so the agent resyncs (and
reports its claims again) from the snapshot the poller fetches once the SB
is back; meanwhile the installed flows keep forwarding.

:class:`Control` decides when to step the agent core (the SB moved, the
plugs changed, or once a second); it is shared by :class:`Runner` (agent and
datapath in one process: the datapath loop of ``agent.datapath`` with the
agent stepping in it) and ``agent.controller.AgentProcess`` (the agent of a
split host, driving a ``netvirt datapath`` over its control socket).

Restart of the one-process form: SIGTERM or SIGINT ends the loop, closes
sockets and leaves the plug directory alone. Nothing is persisted: a new
process opens the same ports, resyncs, reinstalls and claims again; traffic
stops only while no process runs. The split form keeps forwarding while the
agent restarts (docs/agent.md, "Running").

Status: about once a second the process writes a JSON document to the status
file atomically (temporary file + rename), see :meth:`Runner.status`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netvirt.agent.agent import Agent
from netvirt.agent.datapath import DatapathConfig, DatapathLoop, LoopStats
from netvirt.agent.ifaces import IoPort, TunnelIo
from netvirt.agent.physical import Encap
from netvirt.southbound.model import Chassis, SBState
from netvirt.southbound.source import SBDelta, SBSource
from netvirt.state.store import StateStore

log = logging.getLogger(__name__)

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
    kind: str  # chassis | port | installed | member | stats
    args: tuple[Any, ...]


def _same_member(a: _Report, b: _Report) -> bool:
    """Both are health reports about the same member."""
    return a.kind == b.kind == "member" and a.args[1] == b.args[1]


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

    def report_stats(self, chassis: str, stats: dict[str, Any]) -> None:
        """Queued; only the newest stats report waits (an older one is stale)."""
        report = _Report("stats", (chassis, stats))
        with self._queued:
            self._reports = deque(r for r in self._reports if r.kind != "stats")
            self._reports.append(report)
            self._queued.notify_all()

    def report_member_health(self, chassis: str, member_id: str, status: str) -> None:
        """Queued; a newer status for the same member replaces a queued one (only the
        latest result matters, and a flapping member must not grow the queue)."""
        report = _Report("member", (chassis, member_id, status))
        with self._queued:
            self._reports = deque(r for r in self._reports if not _same_member(r, report))
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
                    args = report.args if report.kind != "stats" else report.args[:1]
                    log.warning("SB refused %s report %s: %s", report.kind, args, err)
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
        elif report.kind == "member":
            self.remote.report_member_health(*report.args)
        elif report.kind == "stats":
            self.remote.report_stats(*report.args)
        else:
            self.remote.report_installed(*report.args)

    def _requeue(self, report: _Report) -> None:
        with self._lock:
            newest_only = report.kind in ("installed", "stats")
            newer = newest_only and any(r.kind == report.kind for r in self._reports)
            newer = newer or any(_same_member(r, report) for r in self._reports)
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
    datapath: Path | None = None  # a datapath process's control socket (None: in-process)
    poll_timeout: float = 10.0
    scan_interval: float = 0.5
    status_interval: float = 1.0
    step_interval: float = 1.0
    stats_interval: float = 2.0
    tick: float = 0.1
    batch: int = 64
    # how often an agent process asks its datapath process what is plugged: a newly
    # plugged port waits for the next poll before its flows are computed (the port
    # create -> first packet figure); one poll is a unix socket round trip
    datapath_poll: float = 0.02
    state_fail: str = "closed"  # the one-process datapath's --state-fail (docs/stateless-nf.md)

    def datapath_config(self) -> DatapathConfig:
        return DatapathConfig(
            name=self.name,
            underlay_ip=self.underlay_ip,
            iface_dir=self.iface_dir,
            netns=self.netns,
            encap=self.encap,
            underlay_mtu=self.underlay_mtu,
            state_store=self.state_store,
            state_fail=self.state_fail,
            status_file=self.status_file,
            scan_interval=self.scan_interval,
            status_interval=self.status_interval,
            tick=self.tick,
            batch=self.batch,
        )


def http_sb(config: Config) -> SBSource:
    from netvirt.southbound.http import HttpSB

    return HttpSB(config.url, config.token, chassis=config.name)


class Control:
    """The agent's side of a host loop: the SB threads and when to step the agent core.

    Shared by the one-process :class:`Runner` and the agent process of a split
    host (``agent.controller.AgentProcess``)."""

    def __init__(self, config: Config, remote: SBSource, wake: Callable[[], None]) -> None:
        self.config = config
        self.remote = remote
        chassis = Chassis(config.name, config.encap, config.underlay_ip)
        self.sb = QueuedSB(remote, chassis, wake, poll_timeout=config.poll_timeout)
        self.plugs_changed = False
        self._next_step = 0.0
        self._next_stats = 0.0

    def step_if_due(self, agent: Agent, stats: LoopStats, now: float) -> None:
        """Step the agent when the SB moved, plugs changed, or the periodic step is due."""
        for _ in range(16):
            if agent.mirror.generation is None:
                if not self.sb.snapshot_ready():
                    self.sb.request_snapshot()
                    return
            elif not (self.sb.pending() or self.plugs_changed or now >= self._next_step):
                return
            if self.plugs_changed:
                agent.plugs_changed()
            self.plugs_changed = False
            self._next_step = now + self.config.step_interval
            result = agent.step(0.0)
            stats.steps += 1
            if result.error is not None and not result.error.startswith("SBLost"):
                stats.error(f"southbound: {result.error}")

    def report(
        self,
        agent: Agent,
        health: Iterable[tuple[str, str]],
        now: float,
        datapath_counters: Mapping[str, object] | None = None,
    ) -> None:
        """Queue the datapath's health-check verdicts, and every ``stats_interval`` the
        host's counters (they are also its heartbeat, see ``southbound.hosts``)."""
        for member_id, status in health:
            self.sb.report_member_health(self.config.name, member_id, status)
        if now < self._next_stats or agent.mirror.generation is None:
            return
        self._next_stats = now + self.config.stats_interval
        bindings = agent.bindings
        bound = {} if bindings is None else {i: p for p, i in sorted(bindings.local.items())}
        self.sb.report_stats(self.config.name, agent.counters(datapath_counters) | {"bound": bound})

    def close(self) -> None:
        self.sb.stop()
        close = getattr(self.remote, "close", None)
        if close is not None:
            close()

    def sb_status(self) -> dict[str, object]:
        return {
            "poll": self.sb.poll_health.as_dict(),
            "report": self.sb.report_health.as_dict(),
            "queued_reports": self.sb.queued_reports,
        }

    def errors(self) -> list[tuple[float | None, str | None]]:
        return [
            (self.sb.poll_health.last_error_at, self.sb.poll_health.last_error),
            (self.sb.report_health.last_error_at, self.sb.report_health.last_error),
        ]


def newest_error(candidates: list[tuple[float | None, str | None]]) -> str | None:
    known = [(at, msg) for at, msg in candidates if at is not None and msg]
    return max(known)[1] if known else None


def agent_status(agent: Agent) -> dict[str, object]:
    """The agent's part of a status document."""
    bindings = agent.bindings
    return {
        "sb_generation": agent.mirror.generation,
        "bound": {} if bindings is None else {v: k for k, v in sorted(bindings.local.items())},
        "ignored": {} if bindings is None else dict(bindings.ignored),
    }


# -- the one-process host --------------------------------------------------------------------


class Runner(DatapathLoop):
    """``netvirt agent`` without ``--datapath``: agent and datapath in one process.

    ``sb``, ``store``, ``open_port`` and ``open_tunnel`` replace the HTTP
    source, the state store, AF_PACKET ports and UDP tunnels (tests use
    in-memory twins). An agent restart here restarts the datapath too; the
    lab runs the two halves as separate processes instead."""

    def __init__(
        self,
        config: Config,
        *,
        sb: SBSource | None = None,
        store: StateStore | None = None,
        open_port: Callable[[str], IoPort] | None = None,
        open_tunnel: Callable[[Encap, str, int], TunnelIo] | None = None,
    ) -> None:
        super().__init__(
            config.datapath_config(), store=store, open_port=open_port, open_tunnel=open_tunnel
        )
        self.config = config
        self.control = Control(config, sb if sb is not None else http_sb(config), self.wake)
        self.sb = self.control.sb
        self.agent = Agent(
            config.name, config.encap, config.underlay_ip, self.sb, datapath=self.forwarder
        )

    def start(self) -> None:
        self.sb.start()
        super().start()

    def close(self) -> None:
        self.control.close()
        super().close()

    def periodic(self, now: float) -> None:
        self._guarded("agent step", self._step, now)

    def _step(self, now: float) -> None:
        self.control.step_if_due(self.agent, self.stats, now)
        self.control.report(self.agent, self.forwarder.take_health_events(), now)

    def plugs_changed(self) -> None:
        self.control.plugs_changed = True

    def status(self) -> dict[str, object]:
        doc: dict[str, object] = dict(self.datapath_status())
        doc.update(agent_status(self.agent))
        doc["sb_connected"] = self.sb.connected
        doc["sb"] = self.control.sb_status()
        doc["counters"] = self.agent.counters()
        doc["last_error"] = newest_error(
            [(self.stats.last_error_at, self.stats.last_error), *self.control.errors()]
        )
        return doc
