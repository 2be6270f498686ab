"""The kernel offload's side of the Geneve tunnel: the underlay, and the outer headers.

The datapath's tunnel is a UDP socket (``tunnels/udp.py``); the kernel program
needs what the stack does for that socket: which address and device the host
receives on (the socket's bound address and the device holding it), how a remote
host is reached (the route: the output device; ``bpf_redirect_neigh`` resolves the
next hop's MAC from the neighbour table) and how big a datagram fits (the
device's MTU). :func:`find_underlay` and :func:`route_to` read them from the
kernel (``/proc/thread-self/net/udp``, ``ip -j``) in the datapath's namespace,
once per host and once per remote.

:func:`template` packs the outer headers the program writes in front of an
encapsulated frame: IPv4 (DF, TTL 64, total length and checksum completed per
frame from the template's), UDP from and to the tunnel port with checksum 0
(RFC 8926 allows it over IPv4; Linux's own Geneve sends so by default), and the
Geneve header of ``tunnels/geneve.kernel_header``: netvirt's ports option and the
mark that tells a receiver the inner L4 checksum may be a CHECKSUM_PARTIAL seed.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from netvirt.dataplane.headers.checksum import internet_checksum
from netvirt.dataplane.tunnels.geneve import kernel_header

GENEVE_PORT = 6081
TPL_BYTES = 48  # IPv4 20 + UDP 8 + Geneve 20 (flows.bpf.c TPL_BYTES)
OUTER_BYTES = TPL_BYTES + 14


@dataclass(frozen=True)
class Underlay:
    """Where this host's Geneve socket receives: its address, port and device."""

    ip: str
    port: int
    ifname: str
    ifindex: int


@dataclass(frozen=True)
class Route:
    """How a remote tunnel endpoint is reached: the device, and the largest inner frame."""

    ifindex: int
    max_inner: int


def template(
    local_ip: str, remote_ip: str, port: int, vni: int, ingress: int, egress: int
) -> bytes:
    """The outer IPv4 + UDP + Geneve headers for one encapsulated flow (lengths 0)."""
    src, dst = socket.inet_aton(local_ip), socket.inet_aton(remote_ip)
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 0, 0, 0x4000, 64, 17, 0, src, dst))
    ip[10:12] = internet_checksum(bytes(ip)).to_bytes(2, "big")
    udp = struct.pack("!HHHH", port, port, 0, 0)
    out = bytes(ip) + udp + kernel_header(vni, ingress, egress)
    if len(out) != TPL_BYTES:
        raise ValueError(f"outer headers of {len(out)} bytes, {TPL_BYTES} expected")
    return out


def ipv4(address: str) -> bool:
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(address).version == 4
    return False


def bound_address(port: int = GENEVE_PORT, path: str = "/proc/thread-self/net/udp") -> str | None:
    """The IPv4 address a UDP socket of this namespace is bound to on ``port``, if any."""
    try:
        with open(path) as lines:
            rows = lines.read().splitlines()[1:]
    except OSError:
        return None
    for row in rows:
        fields = row.split()
        if len(fields) < 2:
            continue
        address, _, hex_port = fields[1].partition(":")
        if int(hex_port, 16) == port and address != "00000000":
            return socket.inet_ntoa(bytes.fromhex(address)[::-1])
    return None


Ip = Callable[..., str]  # netns.ip: ``ip [-n NS] args...`` → stdout


def find_underlay(ip: Ip, run: Callable[..., Any], port: int = GENEVE_PORT) -> Underlay | None:
    """This host's Geneve endpoint (``run`` calls a function in the datapath's namespace)."""
    address = run(bound_address, port)
    if address is None:
        return None
    for link in json.loads(ip("-j", "-4", "addr", "show") or "[]"):
        for info in link.get("addr_info", ()):
            if info.get("local") == address:
                return Underlay(address, port, str(link["ifname"]), int(link["ifindex"]))
    return None


def route_to(ip: Ip, local_ip: str, remote_ip: str) -> Route | None:
    """The device towards ``remote_ip`` and the room for an inner frame on it."""
    found = json.loads(ip("-j", "route", "get", remote_ip, "from", local_ip) or "[]")
    if not found or "dev" not in found[0]:
        return None
    link = json.loads(ip("-j", "link", "show", "dev", found[0]["dev"]) or "[]")
    if not link:
        return None
    mtu, ifindex = int(link[0]["mtu"]), int(link[0]["ifindex"])
    return Route(ifindex, min(mtu, 65535) - TPL_BYTES)
