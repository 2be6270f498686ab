"""Plugged interfaces of an agent process: the plug directory, the open ports, offload carry.

Plugging works like Open vSwitch's ``external_ids:iface-id``: whoever builds a
VM (the lab, an operator) creates the VM's veth pair, leaves one end in the
host's namespace and writes one file into the agent's plug directory, named
after that interface, holding the NB port id. The agent never creates or
deletes interfaces or plug files; it only follows them.

* :class:`PlugDir` rescans the directory cheaply: one ``os.scandir`` and a
  ``(mtime, size)`` comparison per file; a file is read again only when it
  changed. Hidden files (``.name``) and ``*.tmp`` are skipped, so a writer
  may write a temporary file and rename it into place; an empty file is not
  ready yet.
* :class:`PortTable` keeps one open port per wanted interface. A port that
  cannot be opened (the interface is not there yet) is retried at every
  sync; a port whose socket failed (the interface was deleted) is closed and
  reopened at the next sync if its file is still there.
* :func:`carry_output` gives a pipeline output (plain bytes) the offload
  metadata of the input frame it was made from (``offload.carry``), so a TCP
  super-frame goes through the pipeline and leaves whole; the forwarder calls
  it as each output is produced. :class:`TunnelSlot` is a tunnel endpoint
  that may not be open yet. A generated packet
  (an ICMP error for a super-frame, say) is not a rewrite of its input and
  leaves as a plain frame: metadata is carried only when the output has the
  input's IP protocol at the input's L4 offset (shifted by a pushed or popped
  VLAN tag).
* :func:`afpacket_in`, :func:`tunnel_in` and :func:`detect_mtu` open sockets
  and look up the underlay MTU inside the host's namespace (the process
  itself stays in the root namespace).

Single-threaded: everything here runs on the agent process's packet loop.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from netvirt.dataplane import netns
from netvirt.dataplane.drops import ParseError
from netvirt.dataplane.ports import offload
from netvirt.dataplane.ports.base import Frame, PortCounters
from netvirt.dataplane.tunnels.udp import TunnelPacket

log = logging.getLogger(__name__)

IFNAMSIZ = 15  # longest Linux interface name (16 bytes with the NUL)
MAX_PLUG_FILE = 4096
VLAN_TAG = 4


class IoPort(Protocol):
    """What the runner needs of a datapath port (``dataplane.ports``: AF_PACKET, TAP)."""

    name: str
    counters: PortCounters

    def fileno(self) -> int: ...

    def recv_batch(self, max_frames: int = 64) -> list[Frame]: ...

    def send_batch(self, frames: Iterable[Frame | bytes]) -> int: ...

    def close(self) -> None: ...


def valid_ifname(name: str) -> bool:
    """True for a name Linux accepts for an interface and that is not a temporary file."""
    return (
        0 < len(name.encode()) <= IFNAMSIZ
        and not name.startswith(".")
        and not name.endswith(".tmp")
        and not any(ch.isspace() or ch in "/:" for ch in name)
    )


# -- the plug directory --------------------------------------------------------------------------


@dataclass
class PlugDir:
    """The plug directory: interface name -> NB port id, re-read only where files changed."""

    path: Path
    _seen: dict[str, tuple[int, int, str]] = field(default_factory=dict)  # name -> stat, id
    _dir_mtime: int = -2  # the directory's mtime at the last scan (-2: never scanned)

    def changed(self) -> bool:
        """True when the directory's entries changed since the last :meth:`scan` (a plug
        file created, removed or renamed into place: one ``stat``, cheap enough for every
        loop iteration). A file rewritten in place is only seen by the periodic scan."""
        try:
            mtime = os.stat(self.path).st_mtime_ns
        except OSError:
            mtime = -1
        return mtime != self._dir_mtime

    def scan(self) -> dict[str, str]:
        """The plugs now in the directory (a missing directory means none)."""
        try:
            self._dir_mtime = os.stat(self.path).st_mtime_ns
        except OSError:
            self._dir_mtime = -1
        stats: dict[str, tuple[int, int]] = {}
        try:
            with os.scandir(self.path) as entries:
                for entry in entries:
                    if valid_ifname(entry.name) and entry.is_file():
                        st = entry.stat()
                        stats[entry.name] = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stats = {}
        seen: dict[str, tuple[int, int, str]] = {}
        for name, stat in stats.items():
            old = self._seen.get(name)
            if old is not None and old[:2] == stat:
                seen[name] = old
                continue
            port_id = self._read(name)
            if port_id is not None:
                seen[name] = (*stat, port_id)
        self._seen = seen
        return {name: value[2] for name, value in seen.items() if value[2]}

    def _read(self, name: str) -> str | None:
        try:
            with open(self.path / name, encoding="utf-8", errors="replace") as handle:
                return handle.read(MAX_PLUG_FILE).strip()
        except OSError:  # removed between scandir and open: gone
            return None


# -- open ports ----------------------------------------------------------------------------------


@dataclass
class OpenPort:
    """An interface the agent has open, standing for NB port ``port_id``."""

    port: IoPort
    port_id: str


@dataclass(frozen=True)
class Sync:
    """What :meth:`PortTable.sync` changed."""

    opened: tuple[tuple[str, OpenPort], ...] = ()
    closed: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.opened or self.closed)


class PortTable:
    """Keeps exactly the wanted interfaces open (see the module docstring)."""

    def __init__(self, opener: Callable[[str], IoPort]) -> None:
        self.opener = opener
        self.open: dict[str, OpenPort] = {}
        self.failed: dict[str, str] = {}  # iface -> why it is not open (retried at each sync)

    def sync(self, wanted: dict[str, str]) -> Sync:
        """Close what is no longer wanted (or changed port id), open what is missing."""
        closed: list[str] = []
        for iface, current in list(self.open.items()):
            if wanted.get(iface) != current.port_id:
                self._close(iface)
                closed.append(iface)
        for iface in list(self.failed):
            if iface not in wanted:
                del self.failed[iface]
        opened: list[tuple[str, OpenPort]] = []
        for iface, port_id in sorted(wanted.items()):
            if iface in self.open:
                continue
            entry = self._open(iface, port_id)
            if entry is not None:
                opened.append((iface, entry))
        return Sync(tuple(opened), tuple(closed))

    def _open(self, iface: str, port_id: str) -> OpenPort | None:
        try:
            port = self.opener(iface)
        except Exception as err:  # OSError (no such interface), NetnsError (no namespace)
            message = f"cannot open {iface}: {err}"
            if self.failed.get(iface) != message:
                log.warning("%s (retrying)", message)
            self.failed[iface] = message
            return None
        self.failed.pop(iface, None)
        entry = OpenPort(port, port_id)
        self.open[iface] = entry
        log.info("plugged %s as port %s", iface, port_id)
        return entry

    def fail(self, iface: str, err: BaseException) -> None:
        """The port's socket failed (interface gone or down): close it, reopen at next sync."""
        if iface in self.open:
            self._close(iface)
            self.failed[iface] = f"{iface} failed: {err}"
            log.warning("%s failed, will reopen: %s", iface, err)

    def _close(self, iface: str) -> None:
        entry = self.open.pop(iface)
        try:
            entry.port.close()
        except OSError as err:
            log.debug("closing %s: %s", iface, err)
        log.info("unplugged %s (port %s)", iface, entry.port_id)

    def close_all(self) -> None:
        for iface in list(self.open):
            self._close(iface)


# -- offload metadata of pipeline outputs ----------------------------------------------------


def carry_output(original: Frame | None, data: bytes) -> Frame | bytes:
    """``data`` (a pipeline output for the input ``original``) as what a port or tunnel
    should send: with the input's offload metadata when it is a rewrite of the input,
    plain bytes when the input had none.

    Raises ``ParseError`` for an output whose metadata cannot be made consistent
    (the caller counts it as a drop).
    """
    if original is None or original.vnet is None:
        return data
    if data is original.data or _rewrite_of(original.data, data):
        return offload.carry(original, data)
    return Frame(data)


def _rewrite_of(original: bytes, data: bytes) -> bool:
    """True when ``data`` looks like ``original`` with headers rewritten in place."""
    delta = len(data) - len(original)
    if delta not in (-VLAN_TAG, 0, VLAN_TAG):
        return False
    try:
        before, after = offload.locate(original), offload.locate(data)
    except ParseError:
        return False
    return before.proto == after.proto and after.l4 - before.l4 == delta


class TunnelIo(Protocol):
    """What the runner needs of a tunnel endpoint (``dataplane.tunnels``)."""

    counters: PortCounters

    def fileno(self) -> int: ...

    def recv_batch(self, max_packets: int = 64) -> list[TunnelPacket]: ...

    def send(
        self, remote: str, vni: int, item: Frame | bytes, ingress: int = 0, egress: int = 0
    ) -> int: ...

    def close(self) -> None: ...


class TunnelSlot:
    """A tunnel endpoint as the forwarder sees it: sends fail while it is not open (the
    datapath opens it once the underlay address exists and reopens it after a failure)."""

    def __init__(self, encap: str) -> None:
        self.encap = encap
        self.tunnel: TunnelIo | None = None

    def send(
        self, remote: str, vni: int, item: bytes | Frame, ingress: int = 0, egress: int = 0
    ) -> int:
        tunnel = self.tunnel
        if tunnel is None:
            raise OSError(f"the {self.encap} tunnel endpoint is not open")
        return tunnel.send(remote, vni, item, ingress, egress)


# -- opening sockets in the host's namespace ------------------------------------------------


def detect_mtu(netns_name: str | None, address: str) -> int | None:
    """The MTU of the interface that holds ``address`` in the namespace (None: not found)."""
    try:
        addrs = netns.ip("-o", "address", "show", netns=netns_name)
    except (netns.NetnsError, OSError):
        return None
    for line in addrs.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[3].split("/")[0] == address:
            link = netns.ip("-o", "link", "show", "dev", fields[1], netns=netns_name, check=False)
            parts = link.split()
            if "mtu" in parts[:-1]:
                return int(parts[parts.index("mtu") + 1])
    return None


def _in_netns(name: str | None, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn`` called inside namespace ``name`` (None: here), so its sockets live there."""
    if name is None:
        return fn(*args, **kwargs)
    return netns.run_in_netns(name, fn, *args, **kwargs)


def afpacket_in(netns_name: str | None, iface: str) -> IoPort:
    """An AF_PACKET port (virtio-net header on) on ``iface`` of the namespace: with
    TPACKET_V2 rings (``ports.ring``: no syscall per received frame, one per sent
    batch), or a plain socket with ``NETVIRT_PORT_RINGS=0``."""
    if os.environ.get("NETVIRT_PORT_RINGS", "1") != "0":
        from netvirt.dataplane.ports.ring import RingPort

        ring: IoPort = _in_netns(netns_name, RingPort, iface)
        return ring
    from netvirt.dataplane.ports.afpacket import AfPacketPort

    port: IoPort = _in_netns(netns_name, AfPacketPort, iface)
    return port


def tunnel_in(netns_name: str | None, encap: str, ip: str, mtu: int) -> TunnelIo:
    """A Geneve or VXLAN endpoint bound to ``ip`` in the namespace."""
    from netvirt.dataplane.tunnels import GeneveTunnel, VxlanTunnel

    kind = GeneveTunnel if encap == "geneve" else VxlanTunnel
    tunnel: TunnelIo = _in_netns(netns_name, kind, ip, underlay_mtu=mtu)
    return tunnel
