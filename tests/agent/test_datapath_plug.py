"""A plug file wakes the datapath loop: the port opens without waiting for a tick."""

from __future__ import annotations

import time
from pathlib import Path

from netvirt.agent.datapath import DatapathConfig, DatapathLoop
from netvirt.dataplane.ports.memory import MemoryPort
from netvirt.dataplane.tunnels import GeneveTunnel
from netvirt.state.memory import MemoryStore


def test_a_plug_wakes_the_idle_loop_and_opens_the_port(tmp_path: Path) -> None:
    plugs = tmp_path / "plugs"
    plugs.mkdir()
    # a tick and a scan interval far longer than the wait below: only the watch can wake it
    config = DatapathConfig("hv1", "127.0.0.1", plugs, scan_interval=3600.0, tick=3600.0)
    loop = DatapathLoop(
        config,
        store=MemoryStore(),
        open_port=MemoryPort,
        open_tunnel=lambda encap, ip, mtu: GeneveTunnel(ip, 0, underlay_mtu=mtu),
    )
    loop.start()
    try:
        loop.run_once(timeout=0.0)  # the first scan: nothing plugged
        assert loop.ports.open == {}
        (plugs / ".vm1.tmp").write_text("port-1\n")
        (plugs / ".vm1.tmp").rename(plugs / "vm1")
        started = time.monotonic()
        for _ in range(5):  # the rename may come as more than one wake-up
            loop.run_once(timeout=5.0)
            if "vm1" in loop.ports.open:
                break
        assert "vm1" in loop.ports.open
        assert time.monotonic() - started < 4.0  # woken, not timed out
        assert loop.datapath_status()["loop"]["plug_events"] >= 1
    finally:
        loop.close()
