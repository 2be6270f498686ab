"""``netvirt agent --datapath SOCKET``: the agent of a split host, in its own process.

Theory of operation
-------------------
The process holds the control half only: the SB threads (``runner.QueuedSB``:
a poller that long-polls the SB service, a reporter that sends claims and
installed generations with retries) and the agent core
(:class:`~netvirt.agent.agent.Agent`) driving a
:class:`~netvirt.agent.dpctl.RemoteDatapath`. Its loop wakes on the SB
threads' eventfd or every tick, polls the datapath (plugged interfaces, rule
version, installed generation: one small round trip), and steps the agent
when the SB moved, the plugs changed, or the periodic step is due.

The datapath may be missing (not started yet, restarting): the agent keeps
its SB copy, retries the connection every tick, and once connected installs
everything again (a new datapath has a new boot id, so the reconciler
re-reads what it holds, which is nothing). The agent may be missing too:
the datapath forwards with what it has, and a new agent reads the installed
rules and changes only what the SB changed meanwhile.
"""

from __future__ import annotations

import logging
import os
import select
import time
from pathlib import Path
from typing import Any

from netvirt.agent.agent import Agent
from netvirt.agent.datapath import LoopStats
from netvirt.agent.dpctl import DatapathError, DatapathUnavailable, RemoteDatapath
from netvirt.agent.process import LoopProcess
from netvirt.agent.runner import Config, Control, agent_status, http_sb, newest_error
from netvirt.southbound.source import SBSource

log = logging.getLogger(__name__)
RECONNECT_EVERY = 0.2  # seconds between attempts to reach a missing datapath


class AgentProcess(LoopProcess):
    """One agent process; :meth:`run` until :meth:`stop`."""

    def __init__(
        self,
        config: Config,
        *,
        sb: SBSource | None = None,
        datapath: RemoteDatapath | None = None,
    ) -> None:
        if config.datapath is None and datapath is None:
            raise ValueError("an agent process needs the datapath's control socket")
        super().__init__()
        self.config = config
        self.status_file = config.status_file
        self.control = Control(config, sb if sb is not None else http_sb(config), self.wake)
        self.sb = self.control.sb
        assert config.datapath is not None or datapath is not None
        self.datapath = datapath or RemoteDatapath(Path(str(config.datapath)))
        self.agent = Agent(
            config.name, config.encap, config.underlay_ip, self.sb, datapath=self.datapath
        )
        self.stats = LoopStats()
        self.started_at = time.time()
        self.dp_counters: dict[str, object] = {}
        self.dp_error: str | None = None
        self._connects = 0
        self._next_connect = self._next_status = 0.0

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self._running = True
        self.sb.start()
        log.info("agent %s: datapath %s", self.config.name, self.datapath.path)

    def close(self) -> None:
        self._stopping = True
        self._running = False
        self.control.close()
        self.write_status()
        self.datapath.close()
        self.close_wake()
        log.info("agent %s stopped", self.config.name)

    def run_once(self, timeout: float | None = None) -> None:
        wait = self.config.datapath_poll if timeout is None else timeout
        ready, _, _ = select.select([self._wake_fd], [], [], wait)
        if ready:
            self.drain_wake()
        now = time.monotonic()
        self.stats.iterations += 1
        if now >= self._next_status:
            self._next_status = now + self.config.status_interval
            self._refresh_counters()
            self.write_status()
        if self._sync_datapath(now):
            self._guarded("agent step", now)
            events = self.datapath.take_health_events()
            self.control.report(self.agent, events, now, self.dp_counters or None)

    # -- the datapath -----------------------------------------------------------------------

    def _sync_datapath(self, now: float) -> bool:
        """Poll the datapath (connecting when needed); False while it is unreachable."""
        if not self.datapath.connected and now < self._next_connect:
            return False
        try:
            changed = self.datapath.poll()
        except (DatapathUnavailable, DatapathError) as err:
            self._next_connect = now + RECONNECT_EVERY
            message = str(err)
            if message != self.dp_error:
                log.warning("%s (retrying)", message)
            self.dp_error = message
            return False
        if self.datapath.connects != self._connects:  # a new connection: install everything
            self._connects = self.datapath.connects
            log.info("connected to datapath %s", self.datapath.view.chassis or "?")
            changed = True
        self.dp_error = None
        if changed:
            self.control.plugs_changed = True
        return True

    def _guarded(self, what: str, now: float) -> None:
        try:
            self.control.step_if_due(self.agent, self.stats, now)
        except DatapathUnavailable as err:  # installs again once the datapath is back
            self.dp_error = str(err)
            self.control.plugs_changed = True
        except Exception as err:
            self.stats.error(f"{what}: {type(err).__name__}: {err}")
            log.exception("%s failed", what)

    def _refresh_counters(self) -> None:
        if not self.datapath.connected:
            return
        try:
            self.dp_counters = self.datapath.counters()
        except (DatapathUnavailable, DatapathError) as err:
            self.dp_error = str(err)

    # -- status -----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        counters = self.agent.counters(self.dp_counters) if self.dp_counters else {}
        view = self.datapath.view
        config = self.config
        doc: dict[str, Any] = {
            "name": config.name,
            "pid": os.getpid(),
            "running": self.running,
            "started_at": self.started_at,
            "updated_at": time.time(),
            "netns": config.netns,
            "encap": config.encap,
            "underlay_ip": config.underlay_ip,
            "installed_generation": view.generation,
            "ports": dict(sorted(view.plugs.items())),
            "datapath": {
                "socket": str(self.datapath.path),
                "connected": self.datapath.connected,
                "connects": self.datapath.connects,
                "error": self.dp_error,
            },
            "sb_connected": self.sb.connected,
            "sb": self.control.sb_status(),
            "loop": {
                "iterations": self.stats.iterations,
                "steps": self.stats.steps,
                "errors": self.stats.errors,
            },
            "counters": counters,
            "io": self.dp_counters.get("io", {}),
            "last_error": newest_error(
                [(self.stats.last_error_at, self.stats.last_error), *self.control.errors()]
            )
            or self.dp_error,
        }
        doc.update(agent_status(self.agent))
        return doc
