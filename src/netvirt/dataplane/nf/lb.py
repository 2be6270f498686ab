"""Load-balancer backend selection for ``ct_lb``, with its shared state in the StateStore.

Theory of operation
-------------------
A new connection to a VIP gets one backend; conntrack then DNATs it there and
every later packet follows the conntrack entry, so selection runs once per
connection. Only healthy backends are passed in (the compiler filters them);
an empty list means the caller drops with ``NO_LB_BACKEND``.

Algorithms (Octavia's names):

* ``ROUND_ROBIN``: a counter per VIP in the store (key ``<p>lbrr:<vip>``); the
  n-th new connection gets backend ``n mod len(backends)``. The counter is read
  with the conntrack lookup and written back once per packet batch by
  compare-and-set, so new connections spread exactly evenly on one host and
  nearly so across hosts (two hosts that read the same counter value at the
  same time pick the same backend once; neither blocks). Deterministic given
  the store's content, which is what tests rely on.
* ``SOURCE_IP`` / ``SOURCE_IP_PORT``: rendezvous hashing of the client address
  (and port) with each backend, through a hash that is the same on every
  host: no state, sticky per client, and removing one backend moves only its
  own clients.
* ``LEAST_CONNECTIONS``: active-connection counts per backend, all backends of
  a VIP in one record (``<p>lblc:<vip>``), incremented when a connection is
  created and decremented when conntrack sees it close (TCP FIN from both sides
  or RST). UDP and ICMP never close explicitly and a TCP peer may just vanish,
  so the counts would only grow; instead they decay exponentially with
  ``LC_HALF_LIFE`` (uniformly for all backends of the VIP, which keeps their
  order). Approximate by design: this ranks backends, it does not audit them.
* **Affinity** (session persistence by source IP, any algorithm): a record
  ``<p>lbaff:<vip>:<client>`` names the backend chosen for a client, with the
  affinity timeout as its TTL, refreshed by every new connection of that
  client. It is honoured only while that backend is still in the healthy list.

All writes of a batch (counters, affinity) are accumulated in an
:class:`LbRound` and flushed in one round trip after the batch's connections
are created; a counter write that loses a compare-and-set race is merged into
the winner's value and retried.
"""

from __future__ import annotations

import json
import zlib
from collections import defaultdict
from collections.abc import Generator
from dataclasses import dataclass

from netvirt.dataplane.actions import Backend, CtLb
from netvirt.dataplane.nf.codec import CtTuple, stable_hash
from netvirt.state.store import CasOp, CasResult, Entry, GetOp, Op, PutOp

ROUND_ROBIN = "ROUND_ROBIN"
SOURCE_IP = "SOURCE_IP"
SOURCE_IP_PORT = "SOURCE_IP_PORT"
LEAST_CONNECTIONS = "LEAST_CONNECTIONS"
ALGORITHMS = frozenset({ROUND_ROBIN, SOURCE_IP, SOURCE_IP_PORT, LEAST_CONNECTIONS})

LC_HALF_LIFE = 900.0  # seconds for a least-connections count to halve without updates
COUNTER_TTL = 86400.0  # a VIP idle for a day forgets its counters
FLUSH_ATTEMPTS = 4

StoreTask = Generator[list[Op], list[object], None]


@dataclass(frozen=True, slots=True)
class LbRequest:
    """What ``ct_lb`` asks for: healthy backends, an algorithm, an optional affinity."""

    backends: tuple[Backend, ...]
    algorithm: str = ROUND_ROBIN
    affinity_timeout: float = 0.0

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"unknown LB algorithm {self.algorithm!r}")

    @classmethod
    def from_action(cls, action: CtLb) -> LbRequest:
        return cls(action.backends, action.algorithm, float(action.affinity_timeout))


@dataclass(frozen=True, slots=True)
class Pick:
    """A backend chosen for one new connection, and what the choice changed."""

    backend: Backend
    backend_id: str
    counter: str  # least-connections record that counted it ("" otherwise)
    affinity: str  # affinity key written for it ("" otherwise)


def backend_id(backend: Backend) -> str:
    port = "-" if backend.port is None else str(backend.port)
    return f"{backend.ip_version}:{backend.ip:x}:{port}"


def vip_id(t: CtTuple) -> str:
    """The VIP a new connection is addressed to: version, protocol, address, port."""
    return f"{t.ip_version}:{t.proto}:{t.dst:x}:{t.dport:x}"


class LbRound:
    """Selection state for one batch: what was read, and the writes still to flush.

    Picks made earlier in the same batch count for later ones (round-robin
    offsets, least-connections increments), so a batch of new connections to
    one VIP spreads like the same connections one by one.
    """

    def __init__(self, prefix: str, now: float, half_life: float = LC_HALF_LIFE) -> None:
        self.prefix = prefix
        self.now = now
        self.half_life = half_life
        self._seen: dict[str, Entry | None] = {}
        self._rr_used: dict[str, int] = defaultdict(int)
        self._lc_delta: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self._affinity: dict[str, tuple[str, float]] = {}

    # -- keys -------------------------------------------------------------------------
    def rr_key(self, t: CtTuple) -> str:
        return f"{self.prefix}lbrr:{vip_id(t)}"

    def lc_key(self, t: CtTuple) -> str:
        return f"{self.prefix}lblc:{vip_id(t)}"

    def affinity_key(self, t: CtTuple) -> str:
        return f"{self.prefix}lbaff:{vip_id(t)}:{t.src:x}"

    def read_keys(self, t: CtTuple, req: LbRequest) -> list[str]:
        """Records a new connection of ``t`` would consult (read with the conntrack lookup)."""
        keys = []
        if req.algorithm == ROUND_ROBIN:
            keys.append(self.rr_key(t))
        elif req.algorithm == LEAST_CONNECTIONS:
            keys.append(self.lc_key(t))
        if req.affinity_timeout > 0:
            keys.append(self.affinity_key(t))
        return [k for k in keys if k not in self._seen]

    def observe(self, key: str, entry: Entry | None) -> None:
        """Record what the store holds; the first read of a batch is the base for its writes."""
        self._seen.setdefault(key, entry)

    # -- selection --------------------------------------------------------------------
    def choose(self, t: CtTuple, req: LbRequest) -> Pick | None:
        """Pick a backend for a new connection ``t``; None when there is none."""
        if not req.backends:
            return None
        ids = [backend_id(b) for b in req.backends]
        affinity = self.affinity_key(t) if req.affinity_timeout > 0 else ""
        sticky = self._affinity_backend(affinity) if affinity else None
        index = ids.index(sticky) if sticky in ids else self._select(t, req, ids)
        chosen = ids[index]
        counter = ""
        if affinity:
            self._affinity[affinity] = (chosen, req.affinity_timeout)
        if req.algorithm == LEAST_CONNECTIONS:
            counter = self.lc_key(t)
            self._lc_delta[counter][chosen] += 1
        return Pick(req.backends[index], chosen, counter, affinity)

    def cancel(self, pick: Pick) -> None:
        """Undo a pick whose connection was not created (another packet or host won)."""
        if pick.counter:
            self._lc_delta[pick.counter][pick.backend_id] -= 1
        if pick.affinity:
            self._affinity.pop(pick.affinity, None)

    def release(self, counter: str, backend: str) -> None:
        """A connection counted in ``counter`` closed."""
        self._lc_delta[counter][backend] -= 1

    def _select(self, t: CtTuple, req: LbRequest, ids: list[str]) -> int:
        if req.algorithm == ROUND_ROBIN:
            key = self.rr_key(t)
            index = (_int(self._seen.get(key)) + self._rr_used[key]) % len(ids)
            self._rr_used[key] += 1
            return index
        if req.algorithm == LEAST_CONNECTIONS:
            counts = self._lc_counts(self.lc_key(t))
            loads = [counts.get(i, 0.0) for i in ids]
            return loads.index(min(loads))
        client = (t.src, t.sport) if req.algorithm == SOURCE_IP_PORT else (t.src,)
        scores = [stable_hash(*client, zlib.crc32(i.encode())) for i in ids]
        return scores.index(max(scores))

    def _affinity_backend(self, key: str) -> str | None:
        if key in self._affinity:
            return self._affinity[key][0]
        entry = self._seen.get(key)
        if entry is None:
            return None
        expiry, _, chosen = entry.value.decode(errors="replace").partition(" ")
        try:
            live = float(expiry) > self.now
        except ValueError:
            return None
        return chosen if live else None

    def _lc_counts(self, key: str) -> dict[str, float]:
        counts = _decayed(self._seen.get(key), self.now, self.half_life)
        for backend, delta in self._lc_delta.get(key, {}).items():
            counts[backend] = max(0.0, counts.get(backend, 0.0) + delta)
        return counts

    # -- write-back -------------------------------------------------------------------
    def flush(self) -> StoreTask:
        """Write counters and affinity back: a store task for the conntrack driver."""
        keys = [k for k, n in self._rr_used.items() if n]
        keys += [k for k, d in self._lc_delta.items() if any(d.values())]
        unread = [k for k in keys if k not in self._seen]
        if unread:
            got = yield [GetOp(k) for k in unread]
            for key, entry in zip(unread, got, strict=True):
                self.observe(key, entry if isinstance(entry, Entry) else None)
        puts: list[Op] = [
            PutOp(key, f"{self.now + timeout!r} {chosen}".encode(), timeout)
            for key, (chosen, timeout) in self._affinity.items()
        ]
        for _ in range(FLUSH_ATTEMPTS):
            ops = [CasOp(k, _version(self._seen[k]), self._merged(k), COUNTER_TTL) for k in keys]
            if not ops and not puts:
                return
            results = yield ops + puts
            puts = []
            retry = []
            for key, result in zip(keys, results, strict=False):
                assert isinstance(result, CasResult)
                if not result.ok:
                    self._seen[key] = result.entry
                    retry.append(key)
            keys = retry

    def _merged(self, key: str) -> bytes:
        if key in self._rr_used:
            return str(_int(self._seen.get(key)) + self._rr_used[key]).encode()
        counts = {k: round(v, 3) for k, v in self._lc_counts(key).items() if v > 0.0005}
        return json.dumps({"t": self.now, "c": counts}, sort_keys=True).encode()


def _int(entry: Entry | None) -> int:
    try:
        return int(entry.value) if entry is not None else 0
    except ValueError:
        return 0


def _version(entry: Entry | None) -> int:
    return entry.version if entry is not None else 0


def _decayed(entry: Entry | None, now: float, half_life: float) -> dict[str, float]:
    """Stored least-connections counts, decayed to ``now``; {} when absent or unreadable."""
    if entry is None:
        return {}
    try:
        record = json.loads(entry.value)
        stamp, counts = float(record["t"]), record["c"]
        factor = 0.5 ** (max(0.0, now - stamp) / half_life)
        return {str(k): float(v) * factor for k, v in counts.items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        return {}
