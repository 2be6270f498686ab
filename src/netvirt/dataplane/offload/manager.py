"""The datapath's side of the kernel offload: which entries go down, and when they leave.

See the package docstring for the design. :class:`KernelOffload` is a flow cache
listener (``FlowCache.listener``): the cache tells it what it inserts, what it
drops and when it flushes; connection epochs tell it which connections changed.
It packs each eligible entry into the kernel map's key and value layout
(``flows.bpf.c``: ``struct fkey``, ``struct fval``) and keeps, per cache key, the
packed key and the connections the entry depends on, so that removal needs no
search. Entries into the tunnel carry their outer headers, entries out of it are
keyed by the underlay device (``tunnel.py``); writes go through ``kmap.BatchedMap``.
Thread-safety: none (the datapath loop's).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import socket
import struct
import time
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any

from netvirt.dataplane.fastpath import ICMP4, ICMP6, TCP4, TCP6, UDP4, UDP6, Entry, Layout
from netvirt.dataplane.offload import bpf, conns, kmap, templates, tunnel
from netvirt.dataplane.offload.envflag import env_flag

log = logging.getLogger(__name__)

LAYOUTS = (TCP4, UDP4, ICMP4, TCP6, UDP6, ICMP6)
LAYOUT_IDS = {layout.name: index + 1 for index, layout in enumerate(LAYOUTS)}
BY_NAME = {layout.name: layout for layout in LAYOUTS}
KEY_BYTES = 60
MAX_PATCHES = 4
MAX_WORDS = 8
VALUE_SIZE = 176  # sizeof(struct fval): checked against the loaded map (bpf.Loaded)
PATCH_BYTES = 14
UNDERLAY_RETRY = 5.0  # seconds between looks for the tunnel endpoint while there is none
IP4_CHECKSUM = 24
_KEY = struct.Struct("=IIII60s")
_ENCAP = struct.Struct("=BBH")
_ENCAP_AT = 116  # offsetof(struct fval, encap)
_VALUE_HEAD = struct.Struct("=QQQIHBB")
_PATCH = struct.Struct(f"=BB{PATCH_BYTES}s")
_WORDS_HEAD = struct.Struct("=BBBB")
_WORD = struct.Struct("=BB")
_PSTAT = struct.Struct("=QQQQ")
_PORT_FIELDS = ("rx_packets", "rx_bytes", "tx_packets", "tx_bytes")


PEER_ENV = "NETVIRT_REDIRECT_PEER"


def redirect_peer_by_env() -> bool:
    """:data:`PEER_ENV` as a boolean word (default on); anything else a clear error."""
    return env_flag(PEER_ENV, True)


def pack_value(
    out_ifindex: int,
    rewrite: Any,
    deadline_ns: int,
    layout: Layout,
    encap: tuple[int, bytes] | None = None,
) -> bytes | None:
    """The kernel value for a rewrite of frames of ``layout``, or None when the kernel
    cannot replay it (more pieces than the value holds, a checksum it does not know).
    ``encap``: (largest inner frame, outer headers) of a flow into the tunnel."""
    delta = has_delta = 0
    for offset, adjust, seeded, _udp in rewrite.sums:
        if offset == layout.ip_checksum and not seeded:
            delta, has_delta = adjust, 1
        elif offset != layout.l4_checksum:
            return None  # (the kernel updates the L4 checksum from the changed words)
    pieces: list[tuple[int, bytes]] = []
    for offset, value in rewrite.patches:
        for start in range(0, len(value), PATCH_BYTES):
            pieces.append((offset + start, bytes(value[start : start + PATCH_BYTES])))
    words = csum_words(rewrite.patches, layout)
    if words is None or len(pieces) > MAX_PATCHES or any(off > 255 for off, _ in pieces):
        return None
    head = _VALUE_HEAD.pack(deadline_ns, 0, 0, out_ifindex, delta, has_delta, len(pieces))
    body = b"".join(_PATCH.pack(off, len(data), data) for off, data in pieces)
    tail = _WORDS_HEAD.pack(layout.l4_checksum, len(words), int(layout.udp), 0)
    tail += b"".join(_WORD.pack(off, pseudo) for off, pseudo in words)
    value = (
        head
        + body.ljust(MAX_PATCHES * _PATCH.size, b"\0")
        + tail.ljust(_WORDS_HEAD.size + MAX_WORDS * _WORD.size, b"\0")
    )
    if encap is not None:
        max_len, outer = encap
        value += _ENCAP.pack(1, 0, min(max_len, 0xFFFF)) + outer
    return value.ljust(VALUE_SIZE, b"\0")  # struct fval is 8-aligned


def csum_words(
    patches: tuple[tuple[int, bytes], ...], layout: Layout
) -> list[tuple[int, int]] | None:
    """The 16-bit words (offset, in the pseudo-header) the patches change that the L4
    checksum covers; None if more than the kernel value holds."""
    ip4 = layout.ip_checksum is not None
    addresses = (26, 34) if ip4 else (22, 54)
    l4 = 34 if ip4 else 54
    pseudo_covered = not (ip4 and layout.name == ICMP4.name)  # ICMPv4 has no pseudo-header
    words: dict[int, int] = {}
    for offset, value in patches:
        for byte in range(offset, offset + len(value)):
            word = byte & ~1
            if addresses[0] <= word < addresses[1] and pseudo_covered:
                words[word] = 1
            elif l4 <= word < layout.end and word != layout.l4_checksum:
                words[word] = 0
    if len(words) > MAX_WORDS:
        return None
    return sorted(words.items())


def pack_key(ifindex: int, layout: str, covered: bytes, vni: int = 0, ports: int = 0) -> bytes:
    """``struct fkey``: ``vni`` and ``ports`` (ingress << 16 | egress) for decap entries."""
    return _KEY.pack(ifindex, LAYOUT_IDS[layout], vni, ports, covered)


class KernelOffload:
    """Mirror of the exact cache's offloadable entries in the kernel flow map."""

    def __init__(
        self,
        max_age: float = 2.0,
        netns: str | None = None,
        blocked: Callable[[str], bool] = lambda _iface: False,
        clock: Callable[[], float] = time.time,
        loaded: bpf.Loaded | None = None,
        syn_templates: bool | None = None,
    ) -> None:
        # connections made in the kernel from their SYN (templates.py): the datapath's
        # --syn-templates/--no-syn-templates, else NETVIRT_SYN_TEMPLATES, else the default
        # (read first: a bad value is an error before anything is loaded)
        self.syn_templates = templates.enabled_by_env() if syn_templates is None else syn_templates
        self.max_age = max_age
        self.clock = clock  # the flow cache's clock (entries' ``born``)
        self.netns = netns
        self.blocked = blocked  # ports the datapath must see every frame of (QoS, health)
        self.loaded = loaded or bpf.load()
        if self.loaded.flows_value_size != VALUE_SIZE:
            size = self.loaded.flows_value_size
            self.loaded.close()
            raise bpf.OffloadUnavailable(f"flow value of {size} bytes, {VALUE_SIZE} expected")
        self.flows = kmap.BatchedMap(self.loaded.lib, self.loaded.flows_fd)
        self.conns = conns.KernelConns(self.loaded)  # TCP connections the kernel tracks
        self.templates = templates.SynTemplates(self.loaded, self.conns)  # ... made from SYNs
        self.ifindex: dict[str, int] = {}
        self.socks: dict[str, socket.socket] = {}
        # cache key -> (kernel key, the connections it depends on, its local output port)
        self.keys: dict[Hashable, tuple[bytes, tuple[Hashable, ...], Hashable]] = {}
        self.by_conn: dict[Hashable, set[Hashable]] = {}
        self.installed = self.refused = self.errors = 0
        self._ncpu = _possible_cpus() or os.cpu_count() or 1
        # the Geneve underlay (``tunnel.py``): found on first need, ``decap`` attached to it
        self.underlay: tunnel.Underlay | None = None
        self.routes: dict[str, tunnel.Route | None] = {}  # remote underlay IP -> route
        self._route_retry: dict[str, float] = {}  # ... none found: when to look again
        # output ports served with bpf_redirect_peer (flows.bpf.c ``peers``: veth ends whose
        # other end is in another namespace); NETVIRT_REDIRECT_PEER=0 turns it off
        self.redirect_peer = redirect_peer_by_env()
        self.peers: set[str] = set()
        self._underlay_tried = -1e9

    # -- ports ---------------------------------------------------------------------------
    def port_opened(self, iface: str, port: object) -> None:
        """Attach the filter to the port's ring socket and ``forward`` to its device."""
        sock = getattr(port, "_sock", None)
        ifname = getattr(port, "ifname", None)
        if not isinstance(sock, socket.socket) or not isinstance(ifname, str):
            return  # not a ring port (tests' memory ports, plain sockets): not offloaded
        try:
            ifindex = self._in_netns(socket.if_nametoindex, ifname)
            self._in_netns(bpf.attach_ingress, self.loaded, ifindex)
            fd = self.loaded.punt_fd
            sock.setsockopt(socket.SOL_SOCKET, bpf.SO_ATTACH_BPF, fd)
        except (OSError, bpf.OffloadUnavailable) as err:
            self.errors += 1
            log.warning("offload: cannot attach to %s: %s", iface, err)
            return
        zero = b"\0" * (_PSTAT.size * self._ncpu)
        self._update(self.loaded.ports_fd, struct.pack("=I", ifindex), zero)
        self.ifindex[iface] = ifindex
        self.socks[iface] = sock
        peer_ok = self.redirect_peer and self.loaded.peers_fd >= 0
        if peer_ok and self._in_netns(bpf.veth_peer_elsewhere, ifname):
            self._update(self.loaded.peers_fd, struct.pack("=I", ifindex), b"\1")
            self.peers.add(iface)

    def port_closed(self, iface: str) -> None:
        ifindex = self.ifindex.pop(iface, None)
        self.socks.pop(iface, None)
        if ifindex is None:
            return
        if iface in self.peers:
            self.peers.discard(iface)
            kmap.delete_elem(self.loaded.lib, self.loaded.peers_fd, struct.pack("=I", ifindex))
        self.conns.port_closed(ifindex)
        gone = [k for k, (_, _, out) in self.keys.items() if iface in (_iface_of(k), out)]
        for key in gone:  # from the port, or to it
            self.forget(key)
        with contextlib.suppress(OSError):  # the device may have gone with its filter
            self._in_netns(bpf.detach_ingress, self.loaded, ifindex)

    # -- the cache's listener -----------------------------------------------------------
    def inserted(self, key: Hashable, entry: Entry) -> None:
        """An exact entry was learned: offload it when the kernel can replay it (queued:
        ``kmap.py``; at once when it replaces a kernel entry with another outcome)."""
        old = self._untrack(key)
        found = self._kernel_entry(key, entry)
        if found is None:
            self.refused += 1
            if old is not None:  # the kernel's outcome is no longer the cache's: out now
                self.flows.delete(old)
                self.flows.commit_deletes()
            return
        kernel_key, value = found
        conns = tuple(conn for conn, _epoch in entry.deps)
        if conns and self._handed_over(key, entry, conns, kernel_key, value):
            if old is not None:  # (the exact entry it replaced is no answer any more)
                self.flows.delete(old)
                self.flows.commit_deletes()
            return
        self.keys[key] = (kernel_key, conns, entry.outputs[0].dest)
        self.installed += 1
        for conn in conns:
            self.by_conn.setdefault(conn, set()).add(key)
        if old is not None and old != kernel_key:
            self.flows.delete(old)
        self.flows.put(kernel_key, value)
        live = self.flows.live.get(kernel_key)
        if (old is not None and old != kernel_key) or (live is not None and live[8:] != value[8:]):
            self.flows.commit_now()  # another outcome replaces the old before the next frame

    def _handed_over(
        self, key: Hashable, entry: Entry, deps: tuple[Hashable, ...], kernel_key: bytes,
        value: bytes,
    ) -> bool:  # fmt: skip
        """Offer a local TCP flow's entry to the kernel connections (``conns.py``): True
        when it completed a connection the kernel now tracks."""
        if not self.conns.enabled or value[_ENCAP_AT] or not isinstance(key, tuple):
            return False
        ifindex = struct.unpack_from("=I", kernel_key)[0]
        return self.conns.offer(key, deps, entry.replies, kernel_key, value, ifindex)

    @property
    def half_learned(self) -> Callable[[Hashable, Entry], bool] | None:
        """:meth:`offer_half` while the kernel takes connections, else None (read once,
        by ``FlowCache.attach``, after :meth:`bind`)."""
        return self.offer_half if self.conns.enabled else None

    def offer_half(self, key: Hashable, entry: Entry) -> bool:
        """One direction of a TCP connection decided by the slow path but not cached (a
        SYN-ACK: ``batchwork.syn_ack_half``; the predicted first ACK: ``handshake.py``):
        offered to the kernel connections only. True when the kernel could serve it (it
        waits for its other half, or completed the connection)."""
        found = self._kernel_entry(key, entry) if self.conns.enabled else None
        if found is None:
            return False
        conns = tuple(conn for conn, _epoch in entry.deps)
        kernel_key, value = found
        if value[_ENCAP_AT] or not isinstance(key, tuple):
            return False
        self._handed_over(key, entry, conns, kernel_key, value)
        return True

    def bind(self, conntrack: Any, epochs: Any) -> None:
        """The flow cache's conntrack and epochs (``FlowCache.attach``)."""
        self.conns.bind(conntrack, epochs)
        if self.syn_templates:
            self.templates.enable(True)
            if self.templates.enabled:
                self.conns.drain = self.templates.drain
                self.conns.deferred = self.templates

    @property
    def template_hook(self) -> Callable[..., object] | None:
        """:meth:`offer_template` while SYN templates are on, else None."""
        return self.offer_template if self.templates.enabled else None

    def offer_template(
        self, ack_key: Hashable, syn_entry: Entry, sport: int,
        snat_range: Callable[[int], tuple[int, int] | None],
    ) -> bool:  # fmt: skip
        """A connection just handed over at its SYN-ACK (``handshake.py``) whose walks
        read none of its varying ports: a SYN template when the SYN's outcome is exactly
        the predicted ACK's (the kernel serves both with one value) and its records have
        a shape the kernel's connections can repeat (``templates.py``)."""
        handed = self.conns.last_handed
        self.conns.last_handed = None
        tpl = self.templates
        found = self._kernel_entry(ack_key, syn_entry)
        if handed is None or found is None:
            tpl.refuse("SYN outcome not offloadable")
            return False
        orig, reply, deps = handed
        kernel_key, value = found
        if set(deps) != {dep for dep, _epoch in syn_entry.deps}:
            tpl.refuse("not the connection just handed over")
            return False
        if conns.conn_key(kernel_key) != orig.key or value[24:] != orig.value[24:]:
            tpl.refuse("SYN outcome differs from the ACK's")
            return False
        return tpl.learn(orig.key, orig.value, reply.key, reply.value, deps, sport, snat_range)

    def fold_frames(self, frames: Sequence[bytes]) -> None:
        """Before the slow path takes frames: their connections back from the kernel."""
        self.conns.fold_frames(frames)

    def _kernel_entry(self, key: Hashable, entry: Entry) -> tuple[bytes, bytes] | None:
        """The packed key and value of an offloadable entry (package docstring), or None."""
        if not isinstance(key, tuple) or len(key) < 3 or entry.drops or len(entry.outputs) != 1:
            return None
        output = entry.outputs[0]
        out = output.dest
        if len(key) == 5:  # (vni, ingress, egress, covered, seeded): from the tunnel
            return self._decap_entry(key, entry, output)
        iface, covered = key[0], key[1]
        if not (isinstance(iface, str) and isinstance(covered, bytes)):
            return None
        layout, ifindex = layout_of(covered), self.ifindex.get(iface)
        if layout is None or ifindex is None or self.blocked(iface):
            return None
        if isinstance(out, str):  # another local port
            out_ifindex = self.ifindex.get(out)
            if out_ifindex is None or self.blocked(out):
                return None
            value = pack_value(out_ifindex, output.rewrite, self._deadline(entry), BY_NAME[layout])
        else:
            value = self._encap_value(out, output.rewrite, self._deadline(entry), BY_NAME[layout])
        if value is None:
            return None
        return pack_key(ifindex, layout, covered), value

    def _deadline(self, entry: Entry) -> int:
        age_ns = int((self.clock() - entry.born) * 1e9)
        return time.monotonic_ns() + int(self.max_age * 1e9) - age_ns

    def _encap_value(self, dest: Any, rewrite: Any, deadline: int, layout: Layout) -> bytes | None:
        """A flow into a Geneve tunnel over IPv4: the value with its outer headers."""
        remote = getattr(dest, "remote", None)
        remote_ip = getattr(remote, "ip", None)
        if getattr(remote, "encap", None) != "geneve" or not isinstance(remote_ip, str):
            return None
        vni, ingress, egress = (getattr(dest, name, None) for name in ("vni", "ingress", "egress"))
        if not (isinstance(vni, int) and isinstance(ingress, int) and isinstance(egress, int)):
            return None
        underlay = self._underlay()
        if underlay is None or not tunnel.ipv4(remote_ip):
            return None
        route = self._route(underlay, remote_ip)
        if route is None:
            return None
        outer = tunnel.template(underlay.ip, remote_ip, underlay.port, vni, ingress, egress)
        return pack_value(route.ifindex, rewrite, deadline, layout, (route.max_inner, outer))

    def _decap_entry(
        self, key: tuple[Any, ...], entry: Entry, output: Any
    ) -> tuple[bytes, bytes] | None:
        """A flow from the tunnel to a local port (``decap`` serves it when it comes without
        offload metadata: from a user-space sender, or from a kernel one)."""
        vni, ingress, egress, covered, _seeded = key  # (a seed came marked by a kernel)
        out = output.dest
        if not isinstance(out, str) or not isinstance(covered, bytes):
            return None
        if not all(isinstance(n, int) and 0 <= n <= 0xFFFF for n in (ingress, egress)):
            return None
        layout, out_ifindex = layout_of(covered), self.ifindex.get(out)
        if not isinstance(vni, int) or layout is None or out_ifindex is None or self.blocked(out):
            return None
        underlay = self._underlay()
        if underlay is None:
            return None
        value = pack_value(out_ifindex, output.rewrite, self._deadline(entry), BY_NAME[layout])
        if value is None:
            return None
        return pack_key(underlay.ifindex, layout, covered, vni, ingress << 16 | egress), value

    # -- the underlay ---------------------------------------------------------------------
    def _underlay(self) -> tunnel.Underlay | None:
        """This host's Geneve endpoint, with ``decap`` attached to its device (looked for
        at most every few seconds while the datapath's tunnel is not open yet)."""
        if self.underlay is not None:
            return self.underlay
        now = time.monotonic()
        if now - self._underlay_tried < UNDERLAY_RETRY:
            return None
        self._underlay_tried = now
        try:
            found = tunnel.find_underlay(self._ip, self._run)
            if found is None:
                return None
            self._in_netns(bpf.attach_ingress, self.loaded, found.ifindex, self.loaded.decap_fd)
        except (OSError, ValueError, bpf.OffloadUnavailable) as err:
            self.errors += 1
            log.warning("offload: no tunnel offload: %s", err)
            return None
        conf = socket.inet_aton(found.ip) + struct.pack("=I", found.port)
        self._update(self.loaded.tunnel_fd, struct.pack("=I", 0), conf)
        zero = b"\0" * (_PSTAT.size * self._ncpu)
        self._update(self.loaded.ports_fd, struct.pack("=I", found.ifindex), zero)
        self.underlay = found
        log.info(
            "offload: Geneve on %s (%s:%d) served in the kernel", found.ifname, found.ip, found.port
        )
        return found

    def _route(self, underlay: tunnel.Underlay, remote_ip: str) -> tunnel.Route | None:
        """The route to a remote underlay address, looked up once; a missing one is
        looked up again after :data:`UNDERLAY_RETRY` (a host whose underlay comes up
        later, or a route added later, would otherwise never be offloaded to)."""
        if remote_ip in self.routes:
            return self.routes[remote_ip]
        now = time.monotonic()
        if now < self._route_retry.get(remote_ip, 0.0):
            return None
        try:
            found = tunnel.route_to(self._ip, underlay.ip, remote_ip)
        except (OSError, ValueError) as err:
            log.warning("offload: no route to %s: %s", remote_ip, err)
            found = None
        if found is None:
            self._route_retry[remote_ip] = now + UNDERLAY_RETRY
            return None
        self._route_retry.pop(remote_ip, None)
        self.routes[remote_ip] = found
        return found

    def _ip(self, *args: str) -> str:
        from netvirt.dataplane import netns

        return netns.ip(*args, netns=self.netns)

    def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self._in_netns(fn, *args)

    def forget(self, key: Hashable) -> None:
        """The cache dropped an entry because it is no longer valid: out of the kernel now."""
        kernel_key = self._untrack(key)
        if kernel_key is not None:
            self.flows.delete(kernel_key)
            self.flows.commit_deletes()

    def evicted(self, key: Hashable) -> None:
        """The cache dropped a valid entry for room: it may leave with the next commit."""
        kernel_key = self._untrack(key)
        if kernel_key is not None:
            self.flows.delete(kernel_key)

    def _untrack(self, key: Hashable) -> bytes | None:
        """Stop tracking ``key`` (its connections forget it too); its kernel key, if any."""
        tracked = self.keys.pop(key, None)
        if tracked is None:
            return None
        kernel_key, conns, _out = tracked
        for conn in conns:
            keys = self.by_conn.get(conn)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self.by_conn[conn]
        return kernel_key

    def flushed(self) -> None:
        """The cache was flushed: so is the kernel map, before the next frame is handled."""
        self.keys.clear()
        self.by_conn.clear()
        self.flows.clear()
        self.templates.flush()  # (before the release: no SYN makes a connection meanwhile)
        self.conns.release_all()

    def conn_changed(self, conn: Hashable) -> None:
        """A connection's state moved: its entries are no longer the slow path's answer
        (they leave the kernel now, with anything else queued, in one syscall)."""
        self.conns.conn_changed(conn)
        keys = self.by_conn.get(conn)
        if not keys:
            return
        for key in list(keys):
            kernel_key = self._untrack(key)
            if kernel_key is not None:
                self.flows.delete(kernel_key)
        self.flows.commit_deletes()

    def commit(self) -> None:
        """The flow cache's once-per-batch call: apply queued writes that waited enough
        (and sweep the kernel connections now and then)."""
        self.flows.commit()
        self.conns.tick()

    def tick(self, _now: float) -> None:
        """The datapath loop's, every iteration (also when no frame woke it: the kernel may
        be serving everything): the kernel connections' sweep, made-connection reports
        and SNAT ports (each at its own pace)."""
        self.conns.tick()

    # -- status ----------------------------------------------------------------------------
    def stats(self) -> dict[str, object]:
        self.conns.tick()  # (an idle datapath folds closed connections back here)
        fd = self.loaded.stats_fd
        per = [self._percpu_sum(fd, struct.pack("=I", i), 1)[0] for i in range(11)]
        ports: dict[str, dict[str, int]] = {}
        for iface, ifindex in self.ifindex.items():
            row = self._percpu_sum(self.loaded.ports_fd, struct.pack("=I", ifindex), 4)
            ports[iface] = dict(zip(_PORT_FIELDS, row, strict=True))
        return {
            "entries": len(self.keys),
            "installed": self.installed,
            "removed": self.flows.deleted,
            "written": self.flows.written,
            "pending": self.flows.pending,
            "map_syscalls": self.flows.syscalls,
            "refused": self.refused,
            "errors": self.errors + self.flows.errors,
            "forwarded_packets": per[0],
            "forwarded_bytes": per[1],
            "punted_expired": per[2],
            "forward_misses": per[3],
            "punted_left_to_datapath": per[4],
            "conns": self.conns.stats()
            | {"forwarded_packets": per[5], "to_datapath": per[6], "lost": per[7]},
            "syn_templates": self.templates.stats()
            | {"kernel_made": per[8], "no_port": per[9], "not_made": per[10]},
            "ports": ports,
            "tunnel": self._tunnel_stats(),
            "redirect_peer": {"enabled": self.redirect_peer, "ports": len(self.peers)},
        }

    def _tunnel_stats(self) -> dict[str, object]:
        """Entries into and out of the tunnel, and the frames the underlay device carried
        in the kernel (rx: decapsulated, tx: encapsulated)."""
        underlay = self.underlay
        encap = sum(1 for value in self.flows.live.values() if value[_ENCAP_AT])
        decap = sum(1 for key in self.keys if isinstance(key, tuple) and len(key) == 5)
        found: dict[str, object] = {"underlay": None, "encap_entries": encap}
        found["decap_entries"] = decap
        if underlay is not None:
            row = self._percpu_sum(self.loaded.ports_fd, struct.pack("=I", underlay.ifindex), 4)
            found |= {"underlay": underlay.ifname} | dict(zip(_PORT_FIELDS, row, strict=True))
        return found

    def close(self) -> None:
        self.templates.flush()
        self.conns.release_all()  # the records get the kernel's state before it goes
        self.templates.drain()  # (connections made since: their records, then released)
        self.conns.release_all()
        self.templates.release_block()
        for iface in list(self.ifindex):
            sock = self.socks.get(iface)
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, bpf.SO_DETACH_BPF, 0)
            self.port_closed(iface)
        if self.underlay is not None:
            with contextlib.suppress(OSError):
                self._in_netns(bpf.detach_ingress, self.loaded, self.underlay.ifindex)
            self.underlay = None
        self.loaded.close()

    # -- kernel map access ------------------------------------------------------------------
    def _update(self, fd: int, key: bytes, value: bytes) -> bool:
        if kmap.update_elem(self.loaded.lib, fd, key, value):
            return True
        self.errors += 1
        return False

    def _percpu_sum(self, fd: int, key: bytes, width: int) -> list[int]:
        size = 8 * width * self._ncpu
        vb = ctypes.create_string_buffer(size)
        kb = ctypes.create_string_buffer(key, len(key))
        if self.loaded.lib.bpf_map_lookup_elem(fd, kb, vb) != 0:
            return [0] * width
        values = struct.unpack(f"={width * self._ncpu}Q", vb.raw)
        return [sum(values[i::width]) for i in range(width)]

    def _in_netns(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self.netns is None:
            return fn(*args)
        from netvirt.dataplane import netns

        return netns.run_in_netns(self.netns, fn, *args)


def layout_of(covered: bytes) -> str | None:
    """The layout of an exact-cache key's covered bytes (``fastpath.frame_key``)."""
    if len(covered) < 20:
        return None
    if covered[12:14] == b"\x08\x00":
        proto = covered[19]  # frame byte 23
        names = {6: TCP4.name, 17: UDP4.name, 1: ICMP4.name}
    elif covered[12:14] == b"\x86\xdd":
        proto = covered[18]  # frame byte 20 (bytes 18-19, the payload length, are not covered)
        names = {6: TCP6.name, 17: UDP6.name, 58: ICMP6.name}
    else:
        return None
    name = names.get(proto)
    if name is None or len(covered) > KEY_BYTES:
        return None
    return name


def _iface_of(key: Hashable) -> Hashable:
    return key[0] if isinstance(key, tuple) and key else None


def _possible_cpus() -> int:
    """Per-CPU map values have one slot per possible CPU (not online, not allowed)."""
    try:
        text = Path("/sys/devices/system/cpu/possible").read_text().strip()
    except OSError:
        return 0
    count = 0
    for part in text.split(","):
        low, _, high = part.partition("-")
        count += int(high or low) - int(low) + 1
    return count
