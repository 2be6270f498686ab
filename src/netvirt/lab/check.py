"""``netvirt lab check``: the topology's connectivity matrix, expected vs actual.

Each check runs a real client inside the source namespace (a VM, or the
external namespace) against an address the lab knows:

* ``ping`` — ``ping -c 1 -W 1``; tried twice, so one packet lost while a
  path warms up (a first ARP, a conntrack entry created in Redis) does not
  count as blocked;
* ``tcp:PORT`` — a TCP connect with a 2 s timeout (Python, no extra tool);
* ``http``/``http:PORT`` — an HTTP GET of ``/`` (proxies disabled, since the
  environment's proxy variables must not redirect lab traffic), reached when
  the answer is 200; the detail shows the page, which names the VM that
  served it (useful behind an LB VIP).

A target is a VM (its fixed IP), ``VM:fip`` (its floating IP), an LB name
(its VIP), ``ext`` (the external namespace's address) or a literal IP.
A check passes when "reached" equals its ``expect`` (``ok``/``blocked``);
``lab check`` exits 1 if any check does not.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from netvirt.lab.state import LabState
from netvirt.lab.topology import EXTERNAL_ALIASES, Check, is_ip

Runner = Callable[[Sequence[str], float], tuple[int, str]]
PING_TRIES = 2
TCP_TIMEOUT = 2.0
HTTP_TIMEOUT = 3.0

TCP_PROBE = (
    "import socket,sys\n"
    "s=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=float(sys.argv[3]))\n"
    "print('connected from %s:%d' % s.getsockname()[:2])\n"
    "s.close()\n"
)
HTTP_PROBE = (
    "import sys,urllib.request\n"
    "opener=urllib.request.build_opener(urllib.request.ProxyHandler({}))\n"
    "url='http://%s:%s/' % (sys.argv[1], sys.argv[2])\n"
    "r=opener.open(url,timeout=float(sys.argv[3]))\n"
    "print(r.status, r.read(200).decode(errors='replace').strip())\n"
)


def run_command(argv: Sequence[str], timeout: float) -> tuple[int, str]:
    """Run a probe; (exit status, last line of output). A timeout counts as failure."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return 124, f"no answer within {timeout:g}s"
    lines = (done.stdout + done.stderr).strip().splitlines()
    return done.returncode, lines[-1] if lines else ""


@dataclass(frozen=True)
class CheckResult:
    check: Check
    address: str
    reached: bool
    detail: str

    @property
    def passed(self) -> bool:
        return self.reached == (self.check.expect == "ok")


class CheckError(ValueError):
    """A check that names something this lab does not have."""


def source_netns(state: LabState, name: str) -> str:
    if name in state.vms:
        return state.vms[name].netns
    if name in EXTERNAL_ALIASES and state.external is not None:
        return state.external.netns
    raise CheckError(f"no VM or external namespace named {name!r}")


def target_address(state: LabState, name: str) -> str:
    """The address a check's ``to`` stands for."""
    if name in state.vms:
        return state.vms[name].ip
    vm_name, _, suffix = name.partition(":")
    if suffix == "fip" and vm_name in state.vms:
        fip = state.vms[vm_name].fip
        if fip is None:
            raise CheckError(f"{vm_name} has no floating IP")
        return fip
    if name in state.load_balancers:
        return state.load_balancers[name].vip
    if name in EXTERNAL_ALIASES and state.external is not None:
        return state.external.ip
    if is_ip(name):
        return name
    raise CheckError(f"no VM, floating IP, load balancer or address named {name!r}")


def _in(netns: str, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", netns, *argv]


def probe(netns: str, kind: str, address: str, runner: Runner = run_command) -> tuple[bool, str]:
    """Try to reach ``address`` from ``netns``; (reached, detail)."""
    if kind == "ping":
        detail = ""
        for _ in range(PING_TRIES):
            status, detail = runner(_in(netns, "ping", "-n", "-c", "1", "-W", "1", address), 5)
            if status == 0:
                return True, _rtt(detail)
        return False, "no reply" if "packets transmitted" in detail or not detail else detail
    name, _, port_text = kind.partition(":")
    port = port_text or "80"
    if name == "tcp":
        argv = _in(netns, sys.executable, "-c", TCP_PROBE, address, port, str(TCP_TIMEOUT))
        status, detail = runner(argv, TCP_TIMEOUT + 5)
        return status == 0, detail
    argv = _in(netns, sys.executable, "-c", HTTP_PROBE, address, port, str(HTTP_TIMEOUT))
    status, detail = runner(argv, HTTP_TIMEOUT + 5)
    return status == 0 and detail.startswith("200"), detail


def _rtt(ping_output: str) -> str:
    match = re.search(r"= [\d.]+/([\d.]+)/", ping_output) or re.search(
        r"time=([\d.]+)", ping_output
    )
    return f"rtt {match.group(1)} ms" if match else "reply"


def run_check(state: LabState, check: Check, runner: Runner = run_command) -> CheckResult:
    address = target_address(state, check.to)
    reached, detail = probe(source_netns(state, check.src), check.kind, address, runner)
    return CheckResult(check, address, reached, detail)


def run_checks(
    state: LabState, checks: Sequence[Check], runner: Runner = run_command, workers: int = 6
) -> list[CheckResult]:
    """All checks, a few at a time (blocked ones spend their timeouts in parallel)."""
    if not checks:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(checks)))) as pool:
        return list(pool.map(lambda c: run_check(state, c, runner), checks))
