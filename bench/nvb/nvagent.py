"""One netvirt host agent for control-plane scale runs: the real agent core, memory ports.

    NETVIRT_HOST_TOKEN=... python3 nvagent.py --url URL --name nvbcp1 \
        --plugs FILE --status FILE

The core (``netvirt.agent.Agent``: SB mirror, bindings, physical flows,
reconciliation into a real classifier, port claims, installed reports) talks
to ``netvirt serve`` over the southbound HTTP API exactly as ``netvirt agent``
does; only the ports are in-memory, so thousands of ports need no thousands of
veths (the same role as OVS ``type=dummy`` interfaces on the OVN side). The
plug list appears as a JSON file ``[[iface, port_id], ...]``; the agent plugs
them all at once and keeps stepping. Its status file (rewritten after every
step) says what it plugged and claimed, the generation it installed and its
RSS, so the harness measures without talking to it.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import resource
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

STOP = False


class NullTunnel:
    """No remote chassis in these runs: nothing is ever encapsulated."""

    def send(self, remote: str, vni: int, item: bytes, ingress: int = 0, egress: int = 0) -> int:
        return 0


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _write(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--plugs", type=Path, required=True)
    parser.add_argument("--status", type=Path, required=True)
    args = parser.parse_args(argv)
    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        del sys.path[0]  # this directory holds modules named like the package's

    from netvirt.agent.agent import Agent
    from netvirt.dataplane.ports.memory import MemoryPort
    from netvirt.southbound.http import HttpSB
    from netvirt.state.memory import MemoryStore

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )  # the agent's slow steps say where their time went
    gc.set_threshold(100_000, 50, 100)  # as netvirt agent: a large long-lived SB mirror
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # one eventfd per memory port

    def stop(_signum: int, _frame: FrameType | None) -> None:
        global STOP
        STOP = True

    signal.signal(signal.SIGTERM, stop)
    sb = HttpSB(args.url, os.environ["NETVIRT_HOST_TOKEN"], timeout=120, chassis=args.name)
    agent = Agent(
        args.name,
        "geneve",
        "127.0.0.1",
        sb,
        state_store=MemoryStore(),
        tunnel=NullTunnel(),
        clock=time.monotonic,
    )
    plugged = 0
    steps = 0
    error = None
    while not STOP:
        if not plugged and args.plugs.exists():
            pairs = json.loads(args.plugs.read_text())
            for iface, port_id in pairs:
                agent.plug(MemoryPort(iface, capacity=4), port_id)
            plugged = len(pairs)
        result = agent.step(timeout=0.2)
        steps += 1
        error = result.error or error
        _write(
            args.status,
            {
                "pid": os.getpid(),
                "plugged": plugged,
                "bound": len(agent.bindings.local) if agent.bindings is not None else 0,
                "installed_generation": result.installed_generation,
                "sb_generation": result.sb_generation,
                "rules": len(getattr(agent.reconciler, "installed", ())),
                "rss_kb": _rss_kb(),
                "steps": steps,
                "error": error,
                "time": time.time(),
                "claimed": len(agent.claims.reported),
            },
        )
    sb.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
