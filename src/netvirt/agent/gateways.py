"""Scale-out gateways: which chassis carries a packet to an external network, and how
every host learns, within a fraction of a second, which gateways are alive.

Theory of operation
-------------------
An external network has one ``localnet`` logical port (the compiler makes the
port holding the upstream router's address one, see docs/gateways.md). Every
gateway chassis plugs it on its own uplink interface, so it is *local* on
each gateway and *remote* everywhere else. Routing and NAT stay on the host
where a packet enters; only the last hop differs:

* **inbound**: the upstream router (the lab's external namespace) spreads
  flows over the gateways' uplinks with an ECMP route; whichever gateway a
  packet enters routes and un-NATs it with the shared conntrack state;
* **outbound**: a host without the localnet port sends the frame, already
  routed and SNATed, through a tunnel to one live gateway picked by
  rendezvous (highest random weight) hashing of the flow's 5-tuple
  (:func:`choose`). Adding a gateway moves only the flows whose new highest
  score is the newcomer's (about 1/n of them); removing one moves only its
  own flows. The gateway outputs the frame on its uplink.

**Liveness without the SB.** A datapath serving localnet ports sends a
:class:`Hello` every ``interval`` (0.1 s) to every other chassis, over the
tunnels (VNI 0, which no logical switch has, an Ethernet frame with the IEEE
local experimental ethertype). A gateway is alive for the ports its newest
hello names until ``misses`` intervals (3.5: 350 ms) pass without one; a
datapath that stops cleanly says goodbye (a hello with ``leaving`` set), so
its peers drop it at once. Hellos are sent only for localnet ports that are
installed and plugged: a gateway whose uplink fails or whose flows are not in
yet is not chosen. The SB is never in this loop; it only lists the chassis
(their underlay addresses and encapsulations) hellos go to.

Pure parts (codec, :class:`Liveness`, :func:`choose`, :func:`flow_hash`) take
``now`` and data; :class:`GatewayPlane` is the small shell the forwarder holds.
"""

from __future__ import annotations

import hashlib
import struct
import time
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache

from netvirt.agent.physical import Remote
from netvirt.dataplane.drops import DropReason, ParseError

HELLO_VNI = 0  # logical switches have VNIs 1..2**24-1 and routers never cross tunnels
HELLO_ETHERTYPE = 0x88B5  # IEEE Std 802 local experimental ethertype 1
MAGIC = b"NVGW"
VERSION = 1
INTERVAL = 0.1  # seconds between hellos
MISSES = 3.5  # intervals without a hello before a gateway is dead
EARLY = 0.9  # a hello is due this fraction of an interval after the last: a loop that
# wakes every interval (its idle tick) then sends at every wake-up, never every other one
MAX_NAME = 255
FLAG_LEAVING = 0x01

_ETH = struct.Struct("!6s6sH")
_FIXED = struct.Struct("!4sBBHI")  # magic, version, flags, interval (ms), sequence
_MASK64 = (1 << 64) - 1


# -- hello codec ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hello:
    """One gateway's announcement: who it is and which localnet ports it serves now."""

    chassis: str
    seq: int
    interval_ms: int
    uplinks: tuple[str, ...]
    leaving: bool = False


def _name(text: str) -> bytes:
    data = text.encode()
    if len(data) > MAX_NAME:
        raise ValueError(f"name longer than {MAX_NAME} bytes: {text[:40]!r}…")
    return bytes([len(data)]) + data


def encode_hello(hello: Hello) -> bytes:
    """The Ethernet frame carried with VNI :data:`HELLO_VNI`."""
    if len(hello.uplinks) > 255:
        raise ValueError("at most 255 uplinks per hello")
    flags = FLAG_LEAVING if hello.leaving else 0
    head = _ETH.pack(bytes(6), bytes(6), HELLO_ETHERTYPE)
    fixed = _FIXED.pack(MAGIC, VERSION, flags, hello.interval_ms, hello.seq & 0xFFFFFFFF)
    ports = b"".join(_name(p) for p in hello.uplinks)
    return head + fixed + _name(hello.chassis) + bytes([len(hello.uplinks)]) + ports


def _malformed(detail: str) -> ParseError:
    return ParseError(DropReason.MALFORMED_TUNNEL, f"gateway hello: {detail}")


def _take_name(frame: bytes, offset: int) -> tuple[str, int]:
    if offset >= len(frame):
        raise _malformed("cut short")
    end = offset + 1 + frame[offset]
    if end > len(frame):
        raise _malformed("name cut short")
    try:
        return frame[offset + 1 : end].decode(), end
    except UnicodeDecodeError:
        raise _malformed("name is not UTF-8") from None


def decode_hello(frame: bytes) -> Hello:
    """Parse a hello frame; :class:`ParseError` (``MALFORMED_TUNNEL``) for anything else."""
    if len(frame) < _ETH.size + _FIXED.size:
        raise _malformed("cut short")
    if _ETH.unpack_from(frame)[2] != HELLO_ETHERTYPE:
        raise _malformed("wrong ethertype")
    magic, version, flags, interval, seq = _FIXED.unpack_from(frame, _ETH.size)
    if magic != MAGIC or version != VERSION:
        raise _malformed("bad magic or version")
    if interval == 0:
        raise _malformed("zero interval")
    chassis, offset = _take_name(frame, _ETH.size + _FIXED.size)
    if not chassis:
        raise _malformed("no chassis name")
    if offset >= len(frame):
        raise _malformed("no uplink count")
    count, offset = frame[offset], offset + 1
    uplinks = []
    for _ in range(count):
        port, offset = _take_name(frame, offset)
        uplinks.append(port)
    if offset != len(frame):
        raise _malformed("trailing bytes")
    return Hello(chassis, seq, interval, tuple(uplinks), bool(flags & FLAG_LEAVING))


# -- flow hashing and the choice ----------------------------------------------------------

_L4_PORTS = (6, 17, 132, 136)  # TCP, UDP, SCTP, UDP-Lite


def flow_hash(frame: bytes) -> int:
    """A 32-bit hash of the frame's flow: IP addresses, protocol and L4 ports (IPv4 and
    IPv6 without extension headers); other frames hash their MACs and ethertype. Fields
    that change along the path (TTL, checksums, MACs of IP packets) are left out, so
    every packet of a flow hashes alike wherever it is sent from."""
    offset, ethertype = 12, int.from_bytes(frame[12:14], "big")
    if ethertype == 0x8100 and len(frame) >= 18:
        offset, ethertype = 16, int.from_bytes(frame[16:18], "big")
    ip = offset + 2
    if ethertype == 0x0800 and len(frame) >= ip + 20:
        ihl = (frame[ip] & 0x0F) * 4
        proto = frame[ip + 9]
        key = frame[ip + 12 : ip + 20] + bytes([proto])
        later_fragment = int.from_bytes(frame[ip + 6 : ip + 8], "big") & 0x1FFF
        if proto in _L4_PORTS and not later_fragment and len(frame) >= ip + ihl + 4:
            key += frame[ip + ihl : ip + ihl + 4]
        return zlib.crc32(key)
    if ethertype == 0x86DD and len(frame) >= ip + 40:
        proto = frame[ip + 6]
        key = frame[ip + 8 : ip + 40] + bytes([proto])
        if proto in _L4_PORTS and len(frame) >= ip + 44:
            key += frame[ip + 40 : ip + 44]
        return zlib.crc32(key)
    return zlib.crc32(frame[: offset + 2])


@lru_cache(maxsize=1024)
def name_weight(name: str) -> int:
    """A 64-bit hash of a chassis name, the same in every process (unlike ``hash``)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big")


def _mix(value: int) -> int:
    """SplitMix64's finalizer: spreads the combined flow and name bits over 64 bits."""
    value = (value ^ (value >> 30)) * 0xBF58476D1CE4E5B9 & _MASK64
    value = (value ^ (value >> 27)) * 0x94D049BB133111EB & _MASK64
    return value ^ (value >> 31)


def score(flow: int, name: str) -> int:
    """The rendezvous weight of gateway ``name`` for ``flow``."""
    return _mix((flow * 0x9E3779B97F4A7C15 & _MASK64) ^ name_weight(name))


def choose(flow: int, candidates: Iterable[str]) -> str | None:
    """The candidate with the highest weight for ``flow`` (ties: the larger name); None if
    there is none. The result depends on the set of candidates only, not their order."""
    best: tuple[int, str] | None = None
    for name in candidates:
        entry = (score(flow, name), name)
        if best is None or entry > best:
            best = entry
    return None if best is None else best[1]


# -- liveness ----------------------------------------------------------------------------


@dataclass
class Peer:
    """What is known of one gateway chassis from its hellos."""

    chassis: str
    uplinks: frozenset[str]
    last_heard: float
    deadline: float
    seq: int
    hellos: int = 1
    lost: int = 0  # hellos missing from the sequence numbers


@dataclass
class Liveness:
    """Gateways heard recently, and for which localnet ports (pure: every call gets ``now``)."""

    misses: float = MISSES
    peers: dict[str, Peer] = field(default_factory=dict)
    ups: int = 0  # transitions to alive
    downs: int = 0  # deaths and goodbyes

    def heard(self, hello: Hello, now: float) -> bool:
        """Record a hello; True when the set of live (gateway, port) pairs changed."""
        old = self.peers.get(hello.chassis)
        if hello.leaving or not hello.uplinks:
            if old is None:
                return False
            del self.peers[hello.chassis]
            self.downs += 1
            return True
        deadline = now + self.misses * hello.interval_ms / 1000
        uplinks = frozenset(hello.uplinks)
        if old is None or old.deadline <= now:
            self.peers[hello.chassis] = Peer(hello.chassis, uplinks, now, deadline, hello.seq)
            self.ups += 1
            return True
        gap = (hello.seq - old.seq) & 0xFFFFFFFF
        if 1 < gap < 1 << 31:
            old.lost += gap - 1
        changed = old.uplinks != uplinks
        old.uplinks, old.last_heard, old.deadline, old.seq = uplinks, now, deadline, hello.seq
        old.hellos += 1
        return changed

    def expire(self, now: float) -> bool:
        """Forget gateways unheard past their deadline; True when any was forgotten."""
        dead = [name for name, peer in self.peers.items() if peer.deadline <= now]
        for name in dead:
            del self.peers[name]
        self.downs += len(dead)
        return bool(dead)

    def next_deadline(self) -> float:
        return min((p.deadline for p in self.peers.values()), default=float("inf"))

    def serving(self, port: str, now: float) -> list[str]:
        """Live gateways announcing ``port``, sorted by name."""
        return sorted(
            name
            for name, peer in self.peers.items()
            if port in peer.uplinks and peer.deadline > now
        )


# -- the forwarder's part ----------------------------------------------------------------


@dataclass
class GatewayCounters:
    hellos_sent: int = 0
    hellos_received: int = 0
    hellos_malformed: int = 0
    hellos_unknown: int = 0  # from a chassis the SB does not list (yet)
    no_gateway: int = 0
    sent_via: dict[str, int] = field(default_factory=dict)  # frames per chosen gateway


class GatewayPlane:
    """Hellos in and out, liveness, and the per-packet choice of a gateway.

    The forwarder calls :meth:`update` on every install (who this chassis is, the
    localnet ports installed here with their interfaces, the other chassis, the
    localnet ports reached through a gateway), :meth:`receive` for every VNI-0
    frame, :meth:`choose` for every frame to a remote localnet port and :meth:`due`
    from its loop. A port is served while it is installed *and* its interface is
    plugged (``plugged``): an uplink that fails stops being announced at the next
    hello, agent or not, and the last hello of a chassis that stops serving tells
    its peers so (as a goodbye does).
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        *,
        interval: float = INTERVAL,
        misses: float = MISSES,
        plugged: Callable[[str], bool] = lambda _iface: True,
    ) -> None:
        self.clock = clock
        self.interval = interval
        self.plugged = plugged
        self.liveness = Liveness(misses)
        self.me = ""
        self.uplinks: dict[str, str] = {}  # localnet port installed here -> its interface
        self.serving: tuple[str, ...] = ()  # what the last hello announced
        self._announced = False
        self.peers: dict[str, Remote] = {}
        self.ports: dict[tuple[int, int], str] = {}
        self.counters = GatewayCounters()
        self.seq = 0
        self._next_hello = 0.0
        self._candidates: dict[str, tuple[str, ...]] = {}
        self._recheck_at = float("inf")
        self._epoch = 0  # moves whenever a port's live gateways change

    def update(
        self,
        me: str,
        uplinks: Mapping[str, str],
        peers: Mapping[str, Remote],
        ports: Mapping[tuple[int, int], str],
    ) -> None:
        """A new installed state; a change of what is served is announced at once."""
        self.me, self.uplinks = me, dict(uplinks)
        self.peers = {name: r for name, r in peers.items() if name != me}
        self.ports = dict(ports)
        self._recompute(self.clock())

    # -- receiving -----------------------------------------------------------------------

    def receive(self, frame: bytes) -> bool:
        """A frame that came with VNI :data:`HELLO_VNI`; False if it is not a valid hello."""
        try:
            hello = decode_hello(frame)
        except ParseError:
            self.counters.hellos_malformed += 1
            return False
        self.counters.hellos_received += 1
        if hello.chassis not in self.peers:
            self.counters.hellos_unknown += 1  # no tunnel endpoint known: cannot use it
            return True
        now = self.clock()
        if self.liveness.heard(hello, now) or now >= self._recheck_at:
            self._recompute(now)
        return True

    def _recompute(self, now: float) -> None:
        self.liveness.expire(now)
        wanted = set(self.ports.values())
        candidates = {
            port: tuple(n for n in self.liveness.serving(port, now) if n in self.peers)
            for port in wanted
        }
        if candidates != self._candidates:
            self._epoch += 1
        self._candidates = candidates
        self._recheck_at = self.liveness.next_deadline()

    def epoch(self) -> int:
        """A number that changes whenever the choice of any flow may change (a gateway
        came, died or left); expiries due by now are applied first. Flows cached with
        their gateway (``dataplane/fastpath.py``) are valid while it stays the same."""
        if self._candidates or self.ports:
            now = self.clock()
            if self._recheck_at <= now:
                self._recompute(now)
        return self._epoch

    # -- choosing ------------------------------------------------------------------------

    def choose(self, where: tuple[int, int], frame: bytes) -> Remote | None:
        """The live gateway for a frame to the localnet port ``where`` (None: none alive)."""
        port = self.ports.get(where)
        if port is None:
            return None
        if self._recheck_at <= self.clock():
            self._recompute(self.clock())
        candidates = self._candidates.get(port, ())
        if not candidates:
            self.counters.no_gateway += 1
            return None
        name = candidates[0] if len(candidates) == 1 else choose(flow_hash(frame), candidates)
        assert name is not None
        sent = self.counters.sent_via
        sent[name] = sent.get(name, 0) + 1
        return self.peers[name]

    def alive(self) -> dict[str, tuple[str, ...]]:
        """Localnet port → the live gateways this host would choose from."""
        return dict(self._candidates)

    # -- sending -------------------------------------------------------------------------

    def due(self, now: float | None = None) -> list[tuple[Remote, bytes]]:
        """Hellos to send now (one per other chassis): every interval while this chassis
        serves a port, and one goodbye when it stops serving any."""
        now = self.clock() if now is None else now
        if self._recheck_at <= now:
            self._recompute(now)
        served = tuple(sorted(p for p, iface in self.uplinks.items() if self.plugged(iface)))
        if served != self.serving:
            self.serving, self._next_hello = served, 0.0  # announce the change at once
        if now < self._next_hello:
            return []
        if not served:
            return self.goodbye()
        self._next_hello = now + self.interval * EARLY
        self._announced = True
        return self._hellos(leaving=False)

    def goodbye(self) -> list[tuple[Remote, bytes]]:
        """Hellos telling every peer to stop using this chassis (a clean stop), if it told
        them it serves anything."""
        if not self._announced:
            return []
        self._announced = False
        return self._hellos(leaving=True)

    def _hellos(self, *, leaving: bool) -> list[tuple[Remote, bytes]]:
        self.seq = (self.seq + 1) & 0xFFFFFFFF
        hello = Hello(self.me, self.seq, max(1, round(self.interval * 1000)), self.serving, leaving)
        frame = encode_hello(hello)
        out = [(remote, frame) for _name, remote in sorted(self.peers.items())]
        self.counters.hellos_sent += len(out)
        return out

    def status(self, now: float | None = None) -> dict[str, object]:
        """Plain data for the status file and counters."""
        now = self.clock() if now is None else now
        c = self.counters
        return {
            "serving": list(self.serving),
            "alive": {port: list(names) for port, names in sorted(self._candidates.items())},
            "peers": {
                name: {
                    "uplinks": sorted(p.uplinks),
                    "heard_ago": round(now - p.last_heard, 3),
                    "hellos": p.hellos,
                    "lost": p.lost,
                }
                for name, p in sorted(self.liveness.peers.items())
            },
            "hellos_sent": c.hellos_sent,
            "hellos_received": c.hellos_received,
            "hellos_malformed": c.hellos_malformed,
            "hellos_unknown": c.hellos_unknown,
            "no_gateway": c.no_gateway,
            "sent_via": dict(sorted(c.sent_via.items())),
            "ups": self.liveness.ups,
            "downs": self.liveness.downs,
        }
