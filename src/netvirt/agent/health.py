"""Load-balancer member health checks, run on the host where the member's VIF is bound.

Theory of operation
-------------------
The compiler says which members to check (:class:`ServiceMonitor` records in
the SB state); the host whose VIF holds the member's address checks it by
talking to the VM directly on that interface, with raw Ethernet frames that
never enter the pipeline, and reports each change of verdict to the SB
(``report_member_health``), which writes the member's ``operating_status``;
the ``lb`` builder then adds or removes the member from ``ct_lb``.

:class:`HealthChecker` is pure: no sockets, no threads, no clock. Every call
that depends on time takes ``now`` (seconds, any monotonic origin), so tests
drive it with a fake VM and a fake clock, and the datapath loop drives it
with ``time.monotonic()``.

Interface (what the datapath loop calls)::

    checker = HealthChecker()
    monitors, iface_of_port = checker_inputs(sb_state, chassis, plugged)
    checker.update(monitors, iface_of_port)     # after every SB or plug change
    consumed = checker.offer(iface, frame, now)  # each frame from a VIF, before the pipeline
    for iface, frame in checker.due(now):        # after a batch of offers, and on a timer
        send frame on iface (towards the VM)
    for member_id, status in checker.changes():  # "ONLINE" | "ERROR"
        sb.report_member_health(chassis, member_id, status)
    timeout = checker.next_deadline()            # when due() next has work (None: idle)

* ``monitors``: the records of members whose VIF is bound to this chassis
  (:func:`local_monitors` picks them from an SB state); ``iface_of_port``:
  logical port → local interface name. A member bound here whose interface
  is missing is probed into the void: its probes time out and it goes ERROR,
  which is the truth (the VM is unreachable), where dropping it would leave
  a stale ONLINE in the API.
* ``offer`` returns True for frames that belong to the checker: ARP requests
  and IPv6 neighbor solicitations for a probe source address (answered with
  the source MAC: a member on the VIP's subnet resolves the VIP before
  replying), and TCP segments or echo replies addressed to a source address
  *and* one of the checker's own ephemeral ports or echo identifiers (late
  replies too, for a short while, answered with a RST). Everything else is
  left to the pipeline (False), so the checker never hides the VM's traffic.
  A cheap byte-level prefilter runs before parsing: frames of interfaces
  without monitors, or not addressed to a source address, cost a dict lookup
  and a slice. L4 checksums of received frames are not verified (TAPs and
  veths with checksum offload hand over partial checksums).
* ``due`` returns the frames to send: new probes, and the answers ``offer``
  queued (ARP replies, the HTTP request after a SYN-ACK, RSTs). Call it right
  after a batch of offers so a handshake is not held up by the timer.

Probes
------
* PING: an ICMP (ICMPv6) echo request; success on the matching echo reply.
* TCP: a SYN to the member port; success on SYN-ACK (answered with RST so the
  VM frees the connection at once), failure on RST or timeout.
* HTTP: a minimal TCP client: SYN; on SYN-ACK, one segment carrying the ACK
  and ``<http_method> <url_path> HTTP/1.0`` with a ``Host`` header; the
  status line of the response is compared with ``expected_codes`` (``200``,
  ``200,202`` or ``200-204``), then RST. A RST, a FIN or a malformed or
  oversized status line before a verdict is a failure.

Timing (Octavia's semantics)
----------------------------
A probe starts every ``delay`` seconds (the first one at once); a probe with
no verdict after ``timeout`` seconds (``timeout <= delay``, the API enforces
it) is a failure. ``max_retries`` consecutive successes make a member ONLINE,
``max_retries_down`` consecutive failures make it ERROR; only changes are
reported. A member that stops answering is reported ERROR at most
``(max_retries_down - 1) * delay + timeout`` after its first failed probe
starts, i.e. within ``max_retries_down * delay + timeout`` of the failure.
After a restart the checker knows nothing: it reports again once a streak
completes (the SB ignores a report that changes nothing).
"""

from __future__ import annotations

import ipaddress
import random
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from netvirt.dataplane.drops import ParseError
from netvirt.dataplane.headers import icmp, icmpv6
from netvirt.dataplane.headers.arp import ARP_REPLY, ARP_REQUEST
from netvirt.dataplane.headers.ethernet import ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6
from netvirt.dataplane.headers.icmp import ICMP_ECHO_REPLY
from netvirt.dataplane.headers.icmpv6 import (
    NA_OVERRIDE,
    NA_SOLICITED,
    ND_NEIGHBOR_SOLICIT,
    ND_OPT_TARGET_LL,
)
from netvirt.dataplane.headers.tcp import TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, TcpHeader
from netvirt.dataplane.packet import (
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_TCP,
    Packet,
    build_arp,
    build_ethernet,
    build_ipv4,
    build_ipv6,
    build_tcp,
    parse_packet,
)
from netvirt.southbound.model import SBState, ServiceMonitor

ONLINE = "ONLINE"
ERROR = "ERROR"
EPHEMERAL = (32768, 61000)  # source ports of TCP/HTTP probes (Linux's default range)
HTTP_STATUS_MAX = 1024  # bytes of response read at most while looking for the status line
TCP_WINDOW = 4096  # small: only the status line matters
ECHO_DATA = b"netvirt health check"
ICMPV6_ECHO_REPLY = 129
SEQ_MOD = 1 << 32

_STATUS_LINE = re.compile(rb"HTTP/\d(?:\.\d)? (\d{3})(?: [^\r\n]*)?")
_ETHERTYPE_IPV4 = ETHERTYPE_IPV4.to_bytes(2, "big")
_ETHERTYPE_ARP = ETHERTYPE_ARP.to_bytes(2, "big")
_ETHERTYPE_IPV6 = ETHERTYPE_IPV6.to_bytes(2, "big")
_SOLICITED_NODE = int(ipaddress.IPv6Address("ff02::1:ff00:0"))


# -- pure helpers ------------------------------------------------------------------------------


def parse_expected_codes(text: str) -> frozenset[int]:
    """Octavia's ``expected_codes``: ``"200"``, ``"200,202"`` or an inclusive ``"200-204"``."""
    text = text.strip() or "200"
    if "-" in text:
        low, high = (int(part) for part in text.split("-", 1))
        if low > high:
            raise ValueError(f"range {text!r} starts after it ends")
        return frozenset(range(low, high + 1))
    return frozenset(int(part) for part in text.split(","))


def status_code(data: bytes, final: bool = False) -> int | None:
    """The code of an HTTP status line at the start of ``data``.

    None while the line may still be incomplete (no newline yet and not
    ``final``); -1 when it is not a status line.
    """
    end = data.find(b"\n")
    if end < 0:
        if not final and len(data) < HTTP_STATUS_MAX:
            return None
        end = len(data)
    found = _STATUS_LINE.fullmatch(data[:end].rstrip(b"\r"))
    return int(found.group(1)) if found else -1


def http_request(monitor: ServiceMonitor) -> bytes:
    """The one request an HTTP probe sends (HTTP/1.0: the server closes after answering)."""
    host = monitor.ip if ":" not in monitor.ip else f"[{monitor.ip}]"
    method = monitor.http_method or "GET"
    path = monitor.url_path or "/"
    lines = [
        f"{method} {path} HTTP/1.0",
        f"Host: {host}:{monitor.port}",
        "User-Agent: netvirt-health-check",
        "Connection: close",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def local_monitors(state: SBState, chassis: str) -> list[ServiceMonitor]:
    """The monitors of members whose VIF is bound to ``chassis`` (what this host checks)."""
    out = []
    for monitor in state.monitors.values():
        binding = state.ports.get(monitor.logical_port)
        if binding is not None and binding.requested_chassis == chassis:
            out.append(monitor)
    return sorted(out, key=lambda m: m.member_id)


def checker_inputs(
    state: SBState, chassis: str, plugged: Mapping[str, str]
) -> tuple[list[ServiceMonitor], dict[str, str]]:
    """The arguments of :meth:`HealthChecker.update` from the mirrored SB state and the
    datapath's plugs (interface → logical port, as ``Forwarder.plugged`` gives them)."""
    monitors = local_monitors(state, chassis)
    wanted = {m.logical_port for m in monitors}
    return monitors, {port: iface for iface, port in plugged.items() if port in wanted}


def _ip_int(text: str) -> int:
    return int(ipaddress.ip_address(text))


def _ip_bytes(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


def _solicited_node(address: int) -> bytes:
    return (_SOLICITED_NODE | (address & 0xFFFFFF)).to_bytes(16, "big")


# -- frames ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProbePath:
    """Addresses of probe frames from the source (the VIP) to one member."""

    version: int
    src_mac: int
    dst_mac: int
    src_ip: int
    dst_ip: int

    @classmethod
    def of(cls, monitor: ServiceMonitor) -> ProbePath:
        version = ipaddress.ip_address(monitor.ip).version
        src, dst = _ip_int(monitor.source_ip), _ip_int(monitor.ip)
        return cls(version, monitor.source_mac, monitor.member_mac, src, dst)

    def frame(self, proto: int, payload: bytes, ident: int = 0) -> bytes:
        if self.version == 4:
            packet = build_ipv4(self.src_ip, self.dst_ip, proto, payload, ident=ident)
            ethertype = ETHERTYPE_IPV4
        else:
            packet = build_ipv6(self.src_ip, self.dst_ip, proto, payload)
            ethertype = ETHERTYPE_IPV6
        return build_ethernet(self.dst_mac, self.src_mac, ethertype, packet, pad=True)

    def tcp(
        self, sport: int, dport: int, seq: int, ack: int, flags: int, data: bytes = b""
    ) -> bytes:
        segment = build_tcp(
            self.src_ip,
            self.dst_ip,
            sport,
            dport,
            data,
            seq=seq % SEQ_MOD,
            ack=ack % SEQ_MOD,
            flags=flags,
            window=TCP_WINDOW,
            ipv6=self.version == 6,
        )
        return self.frame(IPPROTO_TCP, segment, ident=sport)

    def echo(self, ident: int, seq: int) -> bytes:
        if self.version == 4:
            return self.frame(IPPROTO_ICMP, icmp.build_echo(ident, seq, ECHO_DATA), ident=seq)
        message = icmpv6.build_echo(self.src_ip, self.dst_ip, ident, seq, ECHO_DATA)
        return self.frame(IPPROTO_ICMPV6, message)


def arp_reply(request: Packet, mac: int) -> bytes:
    """The answer to an ARP request for one of the checker's source addresses."""
    arp = build_arp(ARP_REPLY, mac, request.arp_tpa, request.arp_sha, request.arp_spa)
    return build_ethernet(request.eth_src, mac, ETHERTYPE_ARP, arp, pad=True)


def neighbor_advert(solicit: Packet, mac: int) -> bytes:
    """The answer to a neighbor solicitation for a source address (RFC 4861 7.2.4)."""
    target = solicit.nd_target
    option = icmpv6.LinkLayerOption(ND_OPT_TARGET_LL, mac)
    message = icmpv6.NeighborAdvertisement(target, NA_SOLICITED | NA_OVERRIDE, (option,))
    body = icmpv6.build_nd(target, solicit.ip_src, message)
    packet = build_ipv6(target, solicit.ip_src, IPPROTO_ICMPV6, body, hop_limit=255)
    return build_ethernet(solicit.eth_src, mac, ETHERTYPE_IPV6, packet)


# -- state -------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Probe:
    """One probe in flight."""

    deadline: float
    sport: int = 0  # TCP/HTTP
    seq: int = 0  # echo sequence number (PING)
    isn: int = 0  # our initial sequence number
    irs: int | None = None  # the member's, once its SYN-ACK came
    request: bytes = b""
    received: bytearray = field(default_factory=bytearray)


@dataclass(slots=True)
class _Member:
    monitor: ServiceMonitor
    path: ProbePath
    iface: str | None
    ident: int  # echo identifier (PING)
    codes: frozenset[int] = frozenset()  # expected HTTP codes
    next_at: float = float("-inf")  # the first probe starts at once
    probe: _Probe | None = None
    ups: int = 0
    downs: int = 0
    status: str | None = None  # the last verdict (None: no streak completed yet)
    seq: int = 0


@dataclass(slots=True)
class _Iface:
    """What the checker answers for on one interface."""

    sources: dict[tuple[int, int], int] = field(default_factory=dict)  # (version, ip) → MAC
    keys: set[bytes] = field(default_factory=set)  # packed addresses for the prefilter


@dataclass(frozen=True, slots=True)
class _Lingering:
    """A TCP probe that ended: late segments to its port are still the checker's."""

    until: float
    path: ProbePath
    iface: str | None


def _codes(monitor: ServiceMonitor) -> frozenset[int]:
    if monitor.type != "HTTP":
        return frozenset()
    try:
        return parse_expected_codes(monitor.expected_codes)
    except ValueError:
        return frozenset()  # the API validates; a bad value fails every check, visibly


@dataclass
class CheckerCounters:
    probes: int = 0
    successes: int = 0
    failures: int = 0
    consumed: int = 0  # frames taken from the pipeline
    answered: int = 0  # ARP/ND answers

    def as_dict(self) -> dict[str, int]:
        return {
            "probes": self.probes,
            "successes": self.successes,
            "failures": self.failures,
            "consumed": self.consumed,
            "answered": self.answered,
        }


def _same_target(a: ServiceMonitor, b: ServiceMonitor) -> bool:
    """Only timing changed: the member keeps its streaks and verdict."""
    timing = ("delay", "timeout", "max_retries", "max_retries_down")
    return all(
        getattr(a, name) == getattr(b, name)
        for name in ServiceMonitor.__dataclass_fields__
        if name not in timing
    )


class HealthChecker:
    """Probes the members of one host (see the module docstring for the interface)."""

    def __init__(self, *, seed: int | None = None) -> None:
        self._rng = random.Random(seed)
        self._members: dict[str, _Member] = {}
        self._ifaces: dict[str, _Iface] = {}
        self._by_port: dict[int, str] = {}  # our TCP source port → member id
        self._by_ident: dict[int, str] = {}  # our echo identifier → member id
        self._lingering: dict[int, _Lingering] = {}  # ended probes' ports
        self._outbox: list[tuple[str, bytes]] = []
        self._changes: dict[str, str] = {}
        self._next_port = EPHEMERAL[0] + self._rng.randrange(EPHEMERAL[1] - EPHEMERAL[0])
        self._next_ident = self._rng.randrange(1, 0x10000)
        self.counters = CheckerCounters()

    # -- configuration ---------------------------------------------------------------------

    def update(self, monitors: Iterable[ServiceMonitor], iface_of_port: Mapping[str, str]) -> None:
        """The members this host checks now, and the interface of each member's port."""
        wanted = {m.member_id: m for m in monitors}
        for member_id in [m for m in self._members if m not in wanted]:
            self._drop(member_id)
        for member_id, monitor in wanted.items():
            iface = iface_of_port.get(monitor.logical_port)
            current = self._members.get(member_id)
            if current is not None and not _same_target(current.monitor, monitor):
                self._drop(member_id)
                current = None
            if current is None:
                ident = self._alloc_ident()
                current = _Member(monitor, ProbePath.of(monitor), iface, ident, _codes(monitor))
                self._members[member_id] = current
                self._by_ident[ident] = member_id
            current.monitor, current.iface = monitor, iface
        self._index()

    def _index(self) -> None:
        self._ifaces = {}
        for member in self._members.values():
            if member.iface is None:
                continue
            local = self._ifaces.setdefault(member.iface, _Iface())
            path = member.path
            local.sources[(path.version, path.src_ip)] = path.src_mac
            local.keys.add(_ip_bytes(member.monitor.source_ip))
            if path.version == 6:
                local.keys.add(_solicited_node(path.src_ip))

    def _drop(self, member_id: str) -> None:
        member = self._members.pop(member_id)
        self._by_ident.pop(member.ident, None)
        if member.probe is not None:
            self._end_probe(member, member.probe, reset=True, now=member.probe.deadline)

    @property
    def active(self) -> bool:
        """Anything to check, send or recognise (the datapath skips the checker otherwise)."""
        return bool(self._members or self._outbox or self._lingering)

    def statuses(self) -> dict[str, str | None]:
        """Each checked member's current verdict (None until a streak completes)."""
        return {member_id: m.status for member_id, m in self._members.items()}

    # -- time ------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When :meth:`due` next has something to do (None: nothing to check)."""
        if self._outbox:
            return float("-inf")
        times = [m.probe.deadline if m.probe else m.next_at for m in self._members.values()]
        return min(times, default=None)

    def due(self, now: float) -> list[tuple[str, bytes]]:
        """Frames to send now: queued answers, then new probes; expires late probes."""
        for member in self._members.values():
            probe = member.probe
            if probe is not None and probe.deadline <= now:
                self._verdict(member, False, now)
            if member.probe is None and member.next_at <= now:
                self._start(member, now)
        self._lingering = {p: v for p, v in self._lingering.items() if v.until > now}
        out, self._outbox = self._outbox, []
        return out

    def changes(self) -> list[tuple[str, str]]:
        """Verdicts that changed since the last call, oldest first (the newest per member)."""
        out = list(self._changes.items())
        self._changes.clear()
        return out

    # -- probing ---------------------------------------------------------------------------

    def _start(self, member: _Member, now: float) -> None:
        monitor = member.monitor
        follow = member.next_at + monitor.delay
        member.next_at = follow if follow > now else now + monitor.delay
        probe = _Probe(deadline=now + monitor.timeout)
        member.probe = probe
        self.counters.probes += 1
        if monitor.type == "PING":
            member.seq = (member.seq + 1) & 0xFFFF
            probe.seq = member.seq
            self._send(member, member.path.echo(member.ident, probe.seq))
            return
        probe.sport = self._alloc_port()
        probe.isn = self._rng.getrandbits(32)
        self._by_port[probe.sport] = monitor.member_id
        syn = member.path.tcp(probe.sport, monitor.port, probe.isn, 0, TCP_SYN)
        self._send(member, syn)

    def _send(self, member: _Member, frame: bytes) -> None:
        """Queue a frame to the member (a member without an interface gets nothing)."""
        if member.iface is not None:
            self._outbox.append((member.iface, frame))

    def _verdict(self, member: _Member, ok: bool, now: float) -> None:
        probe = member.probe
        if probe is not None:
            self._end_probe(member, probe, reset=not ok or member.monitor.type != "PING", now=now)
        if ok:
            self.counters.successes += 1
            member.ups, member.downs = member.ups + 1, 0
            if member.status != ONLINE and member.ups >= member.monitor.max_retries:
                self._set(member, ONLINE)
        else:
            self.counters.failures += 1
            member.ups, member.downs = 0, member.downs + 1
            if member.status != ERROR and member.downs >= member.monitor.max_retries_down:
                self._set(member, ERROR)

    def _set(self, member: _Member, status: str) -> None:
        member.status = status
        self._changes.pop(member.monitor.member_id, None)
        self._changes[member.monitor.member_id] = status

    def _end_probe(self, member: _Member, probe: _Probe, *, reset: bool, now: float) -> None:
        """Forget a probe; its port lingers a while so late replies are still ours."""
        member.probe = None
        if not probe.sport:
            return
        self._by_port.pop(probe.sport, None)
        until = now + 2 * member.monitor.timeout + 1
        self._lingering[probe.sport] = _Lingering(until, member.path, member.iface)
        if reset and probe.irs is not None:
            seq = probe.isn + 1 + len(probe.request)
            ack = probe.irs + 1 + len(probe.received)
            rst = member.path.tcp(probe.sport, member.monitor.port, seq, ack, TCP_RST | TCP_ACK)
            self._send(member, rst)

    def _alloc_port(self) -> int:
        low, high = EPHEMERAL
        for _ in range(high - low):
            port = self._next_port
            self._next_port = port + 1 if port + 1 < high else low
            if port not in self._by_port and port not in self._lingering:
                return port
        self._lingering.clear()  # more probes in flight than ports: forget the late ones
        return self._alloc_port()

    def _alloc_ident(self) -> int:
        while self._next_ident in self._by_ident or self._next_ident == 0:
            self._next_ident = (self._next_ident + 1) & 0xFFFF
        ident = self._next_ident
        self._next_ident = (ident + 1) & 0xFFFF
        return ident

    # -- receiving -------------------------------------------------------------------------

    def watches(self, iface: str) -> bool:
        """Frames from ``iface`` may be the checker's (a monitored member's port)."""
        return iface in self._ifaces

    def offer(self, iface: str, frame: bytes | bytearray | memoryview, now: float) -> bool:
        """Take ``frame`` (received from ``iface``) if it belongs to the checker."""
        local = self._ifaces.get(iface)
        if local is None or not _maybe_ours(frame, local):
            return False
        try:
            packet = parse_packet(frame)
        except ParseError:
            return False
        if packet.eth.vlans:
            return False
        taken = self._dispatch(iface, local, packet, now)
        if taken:
            self.counters.consumed += 1
        return taken

    def _dispatch(self, iface: str, local: _Iface, packet: Packet, now: float) -> bool:
        if packet.eth_type == ETHERTYPE_ARP:
            mac = local.sources.get((4, packet.arp_tpa))
            if packet.arp_op != ARP_REQUEST or mac is None:
                return False
            return self._answer(iface, arp_reply(packet, mac))
        version = packet.ip_version
        if version == 6 and packet.icmp_type == ND_NEIGHBOR_SOLICIT:
            mac = local.sources.get((6, packet.nd_target))
            if mac is None or packet.ip_proto != IPPROTO_ICMPV6 or not packet.ip_src:
                return False  # not ours, or duplicate address detection (no one to answer)
            return self._answer(iface, neighbor_advert(packet, mac))
        if (version, packet.ip_dst) not in local.sources:
            return False
        if packet.ip_proto == IPPROTO_TCP and isinstance(packet.l4, TcpHeader):
            return self._tcp_in(packet, now)
        echo_reply = ICMP_ECHO_REPLY if version == 4 else ICMPV6_ECHO_REPLY
        if packet.ip_proto in (IPPROTO_ICMP, IPPROTO_ICMPV6) and packet.icmp_type == echo_reply:
            return self._echo_in(packet, now)
        return False

    def _answer(self, iface: str, frame: bytes) -> bool:
        self._outbox.append((iface, frame))
        self.counters.answered += 1
        return True

    def _echo_in(self, packet: Packet, now: float) -> bool:
        if packet.payload_offset is None:
            return False
        if isinstance(packet.l4, icmp.IcmpHeader):
            ident, seq = packet.l4.ident, packet.l4.seq
        else:
            ident, seq = icmpv6.echo_fields(packet.frame, packet.payload_offset)
        member_id = self._by_ident.get(ident)
        if member_id is None:
            return False
        member = self._members[member_id]
        if packet.ip_src != member.path.dst_ip or packet.ip_dst != member.path.src_ip:
            return False
        probe = member.probe
        if probe is not None and member.monitor.type == "PING" and probe.seq == seq:
            self._verdict(member, True, now)
        return True  # our identifier: a late or duplicate reply is ours as well

    def _tcp_in(self, packet: Packet, now: float) -> bool:
        tcp = packet.l4
        assert isinstance(tcp, TcpHeader)
        member_id = self._by_port.get(tcp.dport)
        if member_id is None:
            return self._late(packet, tcp)
        member = self._members[member_id]
        probe = member.probe
        path = member.path
        if probe is None or packet.ip_src != path.dst_ip or tcp.sport != member.monitor.port:
            return False
        if tcp.flags & TCP_RST:
            probe.irs = None  # nothing to reset: the member closed it
            self._verdict(member, False, now)
        elif probe.irs is None:
            self._syn_ack(member, probe, tcp, now)
        else:
            self._response(member, probe, tcp, packet.payload, now)
        return True

    def _late(self, packet: Packet, tcp: TcpHeader) -> bool:
        """A segment for a probe that has ended: ours, and answered with RST when it
        could leave a connection open on the member."""
        lingering = self._lingering.get(tcp.dport)
        if lingering is None or packet.ip_src != lingering.path.dst_ip:
            return False
        if not tcp.flags & TCP_RST and tcp.flags & TCP_ACK and lingering.iface is not None:
            rst = lingering.path.tcp(tcp.dport, tcp.sport, tcp.ack, 0, TCP_RST)
            self._outbox.append((lingering.iface, rst))
        return True

    def _syn_ack(self, member: _Member, probe: _Probe, tcp: TcpHeader, now: float) -> None:
        want = TCP_SYN | TCP_ACK
        if tcp.flags & want != want or tcp.ack != (probe.isn + 1) % SEQ_MOD:
            return  # not the answer to our SYN: ignore it (the timeout decides)
        probe.irs = tcp.seq
        if member.monitor.type == "TCP":
            self._verdict(member, True, now)
            return
        probe.request = http_request(member.monitor)
        segment = member.path.tcp(
            probe.sport,
            member.monitor.port,
            probe.isn + 1,
            probe.irs + 1,
            TCP_ACK | TCP_PSH,
            probe.request,
        )
        self._send(member, segment)

    def _response(
        self, member: _Member, probe: _Probe, tcp: TcpHeader, data: bytes, now: float
    ) -> None:
        assert probe.irs is not None
        expected = (probe.irs + 1 + len(probe.received)) % SEQ_MOD
        if data and tcp.seq == expected:
            probe.received += data
        final = bool(tcp.flags & TCP_FIN) and tcp.seq == expected
        code = status_code(bytes(probe.received), final)
        if code is not None:
            self._verdict(member, code in member.codes, now)


def _maybe_ours(frame: bytes | bytearray | memoryview, local: _Iface) -> bool:
    """Byte-level prefilter: is the frame addressed to a source address of this interface?

    Untagged frames only (VMs send untagged); the parser decides for real.
    """
    ethertype = bytes(frame[12:14])
    if ethertype == _ETHERTYPE_IPV4:
        return bytes(frame[30:34]) in local.keys
    if ethertype == _ETHERTYPE_ARP:
        return bytes(frame[38:42]) in local.keys
    if ethertype == _ETHERTYPE_IPV6:
        return bytes(frame[38:54]) in local.keys
    return False
