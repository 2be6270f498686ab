"""Addressing lab VMs with a real DHCP client: Debian's busybox ``udhcpc``.

A VM namespace starts with an unnumbered ``eth0``; ``udhcpc`` there talks
DHCP to the datapath on its host (netvirt answers DHCP itself, per port) and
calls the script below on each event. The lab writes that script, so what a
lease changes is explicit and limited to the namespace:

* ``bound``/``renew``: the address with its prefix length, the MTU (option
  26), the routes — the classless static routes (option 121) when present,
  else the default route via the router (option 3), as RFC 3442 requires —
  and a record of the lease in ``$NETVIRT_LEASE_FILE`` (``key=value`` lines).
* ``deconfig``: the IPv4 addresses go, the link stays up.
* DNS servers are recorded, never written: ``ip netns exec`` shares the
  machine's ``/etc/resolv.conf`` unless ``/etc/netns/<ns>/`` exists, and the
  lab must not touch the machine's configuration.

``udhcpc -q -n`` exits once bound (or fails after ``-t`` tries), so nothing
stays running: a lease of 12 hours outlives any lab.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

SCRIPT_NAME = "udhcpc.sh"
LEASE_ENV = "NETVIRT_LEASE_FILE"
TRIES = 5
TRY_SECONDS = 1

SCRIPT = """#!/bin/sh
# Written by `netvirt lab`: udhcpc's event script for one VM namespace.
# Configures only "$interface" in this namespace and records the lease in
# $NETVIRT_LEASE_FILE. Never touches /etc/resolv.conf (the machine's file).
set -u
case "$1" in
  deconfig)
    ip -4 addr flush dev "$interface"
    ip link set dev "$interface" up
    ;;
  bound|renew)
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/${mask:-32}" dev "$interface"
    if [ -n "${mtu:-}" ]; then ip link set dev "$interface" mtu "$mtu"; fi
    if [ -n "${staticroutes:-}" ]; then
      set -- $staticroutes
      while [ $# -ge 2 ]; do
        if [ "$2" = "0.0.0.0" ]; then
          ip route replace "$1" dev "$interface"
        else
          ip route replace "$1" via "$2" dev "$interface"
        fi
        shift 2
      done
    elif [ -n "${router:-}" ]; then
      for gw in $router; do
        ip route replace default via "$gw" dev "$interface"
        break
      done
    fi
    if [ -n "${NETVIRT_LEASE_FILE:-}" ]; then
      {
        echo "interface=$interface"
        echo "ip=$ip"
        echo "mask=${mask:-}"
        echo "router=${router:-}"
        echo "dns=${dns:-}"
        echo "domain=${domain:-}"
        echo "mtu=${mtu:-}"
        echo "lease=${lease:-}"
        echo "serverid=${serverid:-}"
        echo "staticroutes=${staticroutes:-}"
      } > "$NETVIRT_LEASE_FILE.tmp"
      mv "$NETVIRT_LEASE_FILE.tmp" "$NETVIRT_LEASE_FILE"
    fi
    ;;
esac
exit 0
"""


class DhcpError(RuntimeError):
    """No lease: udhcpc's output is in the message."""


@dataclass(frozen=True)
class Lease:
    """What the DHCP server handed out, as the client saw it."""

    ip: str
    prefixlen: int
    router: str | None = None
    dns: tuple[str, ...] = ()
    mtu: int | None = None
    server: str | None = None
    lease_time: int | None = None
    domain: str | None = None
    raw: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def cidr(self) -> str:
        return f"{self.ip}/{self.prefixlen}"


def parse_lease(text: str) -> Lease:
    """Parse the script's ``key=value`` record."""
    raw: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            raw[key.strip()] = value.strip()
    if not raw.get("ip"):
        raise DhcpError(f"the lease record has no address: {text!r}")
    mask = raw.get("mask", "")
    prefixlen = int(mask) if mask.isdigit() else 32
    return Lease(
        ip=str(ipaddress.IPv4Address(raw["ip"])),
        prefixlen=prefixlen,
        router=(raw.get("router") or "").split()[0] if raw.get("router") else None,
        dns=tuple((raw.get("dns") or "").split()),
        mtu=int(raw["mtu"]) if raw.get("mtu", "").isdigit() else None,
        server=raw.get("serverid") or None,
        lease_time=int(raw["lease"]) if raw.get("lease", "").isdigit() else None,
        domain=raw.get("domain") or None,
        raw=raw,
    )


def write_script(directory: Path) -> Path:
    """Write the event script (mode 0755) into ``directory`` and return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / SCRIPT_NAME
    path.write_text(SCRIPT, encoding="utf-8")
    path.chmod(0o755)
    return path


def busybox() -> str:
    """The busybox binary; a clear error when the package is missing."""
    found = shutil.which("busybox")
    if found is None:
        raise DhcpError("busybox is not installed (udhcpc): run scripts/setup.sh as root")
    return found


def udhcpc_argv(script: Path, hostname: str, iface: str = "eth0") -> list[str]:
    """One-shot client: exit when bound (-q) or after TRIES discovers (-n)."""
    return [
        busybox(),
        "udhcpc",
        "-i",
        iface,
        "-q",
        "-n",
        "-t",
        str(TRIES),
        "-T",
        str(TRY_SECONDS),
        "-s",
        str(script),
        "-O",
        "mtu",
        "-O",
        "staticroutes",
        "-x",
        f"hostname:{hostname}",
    ]


def acquire(netns: str, script: Path, lease_file: Path, hostname: str) -> Lease:
    """Run udhcpc in ``netns`` until bound; return the lease it recorded."""
    lease_file.unlink(missing_ok=True)
    argv = ["ip", "netns", "exec", netns, *udhcpc_argv(script, hostname)]
    env = {**os.environ, LEASE_ENV: str(lease_file)}
    timeout = TRIES * (TRY_SECONDS + 1) + 10
    try:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise DhcpError(f"{hostname}: udhcpc did not finish within {timeout}s") from None
    if done.returncode != 0 or not lease_file.exists():
        output = (done.stdout + done.stderr).strip().replace("\n", " | ")
        raise DhcpError(f"{hostname}: no DHCP lease (udhcpc: {output or done.returncode})")
    return parse_lease(lease_file.read_text(encoding="utf-8"))
