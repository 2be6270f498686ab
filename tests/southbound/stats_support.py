"""Stats reports as an agent sends them, a settable clock and host credentials for tests."""

from __future__ import annotations

import time
from typing import Any

from netvirt.northbound import identity
from netvirt.northbound.context import Context
from netvirt.northbound.db import Database


class Clock:
    """The real wall clock plus an offset the test moves forward (the store's
    realization rows carry real timestamps, so the two must agree)."""

    def __init__(self) -> None:
        self.offset = 0.0

    @property
    def now(self) -> float:
        return time.time() + self.offset

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.offset += seconds


def mint_host_token(db: Database) -> str:
    with db.write(bump=False) as session:
        token = identity.create_token(session, Context.admin(), "admin", "host", "hv")
    return str(token["token"])


def port_stats(rx: int = 0, tx: int = 0, **drops: int) -> dict[str, Any]:
    """One interface's counters: ``rx``/``tx`` packets of 100 bytes each."""
    return {
        "rx_packets": rx,
        "rx_bytes": rx * 100,
        "tx_packets": tx,
        "tx_bytes": tx * 100,
        "tx_errors": 0,
        "drops": drops,
    }


def stats_doc(
    chassis: str, bound: dict[str, str], ports: dict[str, dict[str, Any]], installed: int = 1
) -> dict[str, Any]:
    """What ``Agent.counters()`` returns plus ``bound`` (interface → logical port)."""
    drops: dict[str, int] = {}
    for port in ports.values():
        for reason, count in port["drops"].items():
            drops[reason] = drops.get(reason, 0) + count
    return {
        "chassis": chassis,
        "generation": {"sb": installed, "installed": installed},
        "ports": ports,
        "tunnel": port_stats(rx=7, tx=9, unknown_vni=1),
        "drops": drops | {"unknown_vni": 1},
        "flows": {"installed": 120, "added": 130, "removed": 10, "reconciles": 3},
        "sb": {"snapshots": 1, "deltas": 2, "gaps": 0, "errors": 0, "registrations": 1},
        "bound": bound,
    }
