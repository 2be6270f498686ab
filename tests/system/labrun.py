"""Driving ``netvirt lab`` from system tests: run its CLI, read its state, look inside."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from netvirt.dataplane import netns
from netvirt.lab.state import LabState


@dataclass
class LabRun:
    """Run ``netvirt lab …`` against one lab; read its state."""

    name: str
    root: Path

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "NETVIRT_LAB_DIR": str(self.root), "NETVIRT_LAB": self.name}

    def __call__(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "netvirt.cli.main", "lab", *args]
        return subprocess.run(
            argv, env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )

    def ok(self, *args: str, timeout: float = 90) -> str:
        done = self(*args, timeout=timeout)
        assert done.returncode == 0, f"lab {args}: {done.returncode}\n{done.stdout}{done.stderr}"
        return done.stdout

    def state(self) -> LabState:
        state = LabState.load(self.root / self.name)
        assert state is not None
        return state

    def sh(self, node: str, *argv: str, timeout: float = 15) -> subprocess.CompletedProcess[str]:
        ns = self.state().node_netns(node)
        assert ns is not None
        return netns.exec_in(ns, argv, timeout=timeout)

    def leftovers(self) -> list[str]:
        prefix = f"nvl-{self.name}-"
        found = [f"netns {n}" for n in netns.list_netns(prefix)]
        links = netns.ip("-o", "link", "show")
        found += [
            f"link {line.split(':')[1].strip()}" for line in links.splitlines() if prefix in line
        ]
        needle = f"{self.root}/".encode()
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) != os.getpid():
                try:
                    cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
                except OSError:
                    continue
                if needle in cmdline:
                    found.append(f"process {entry}: {cmdline.decode(errors='replace')[:80]}")
        return found


def wait_reachable(run: LabRun, node: str, address: str, timeout: float = 15.0) -> bool:
    """Ping until a reply (a path may need a moment after ``up`` or a restart)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if run.sh(node, "ping", "-n", "-c", "1", "-W", "1", address).returncode == 0:
            return True
    return False
