"""TCP connection states for conntrack: the per-packet state machine and the timeouts.

Split out of ``conntrack.py`` (which re-exports everything here): a pure function of
(state, FIN bits, direction, flags), so that conntrack, its read cache's checks and the
Hypothesis state machines share one definition. The table is in docs/conntrack.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from netvirt.dataplane.nf.codec import (
    FIN_ORIG,
    FIN_REPLY,
    IPPROTO_TCP,
    PORT_PROTOCOLS,
    CtEntry,
    CtState,
    CtTuple,
)

TCP_FIN, TCP_SYN, TCP_RST, TCP_ACK = 0x01, 0x02, 0x04, 0x10
_CONTROL = TCP_FIN | TCP_SYN | TCP_RST | TCP_ACK
CLOSING = (CtState.TIME_WAIT, CtState.CLOSED)


# the Timeouts field of each TCP state (any other state: "closed")
_TCP_TIMEOUTS = {
    CtState.SYN_SENT: "syn_sent",
    CtState.SYN_RECV: "syn_recv",
    CtState.ESTABLISHED: "established",
    CtState.FIN_WAIT: "fin_wait",
    CtState.CLOSE_WAIT: "close_wait",
    CtState.TIME_WAIT: "time_wait",
}


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Idle timeouts in seconds per state: Linux's shape, shorter where Linux is extreme."""

    syn_sent: float = 30.0
    syn_recv: float = 30.0
    established: float = 7200.0  # Linux: 5 days
    fin_wait: float = 30.0  # Linux: 120 s
    close_wait: float = 30.0  # Linux: 60 s
    time_wait: float = 120.0
    closed: float = 10.0
    udp_unreplied: float = 30.0
    udp_replied: float = 180.0
    icmp: float = 30.0
    other: float = 600.0
    refresh_fraction: float = 0.1  # rewrite an unchanged entry after this share of its timeout

    def of(self, t: CtTuple, state: CtState) -> float:
        """The timeout of a connection like ``t`` in ``state``."""
        if t.proto == IPPROTO_TCP:
            timeout: float = getattr(self, _TCP_TIMEOUTS.get(state, "closed"))
            return timeout
        if t.proto in PORT_PROTOCOLS:
            return self.udp_replied if state is CtState.REPLIED else self.udp_unreplied
        return self.icmp if t.is_icmp else self.other


def tcp_flags_valid(flags: int) -> bool:
    """Combinations no TCP stack sends are invalid whatever the state."""
    if flags & TCP_SYN and flags & (TCP_FIN | TCP_RST):
        return False
    return bool(flags & _CONTROL)


def tcp_opens(flags: int) -> bool:
    """Only a plain SYN may start a connection (no mid-stream pickup)."""
    return flags & _CONTROL == TCP_SYN


def tcp_step(state: CtState, fins: int, reply: bool, flags: int) -> tuple[CtState, int] | None:
    """The next (state, FIN bits) of a TCP connection for one packet; None = invalid.

    Idempotent for retransmissions: the same packet twice gives the same state.
    """
    if not tcp_flags_valid(flags):
        return None
    if flags & TCP_RST:
        return CtState.CLOSED, fins
    syn, ack, fin = bool(flags & TCP_SYN), bool(flags & TCP_ACK), bool(flags & TCP_FIN)
    if state is CtState.SYN_SENT:
        if reply:
            return (CtState.SYN_RECV, fins) if syn else None
        return (state, fins) if syn and not ack else None
    if state is CtState.SYN_RECV:
        if syn:
            return (state, fins) if reply or not ack else None
        if reply or not ack:
            return None
        return (CtState.FIN_WAIT, fins | FIN_ORIG) if fin else (CtState.ESTABLISHED, fins)
    if state is CtState.CLOSED or (syn and not (reply and ack)) or not ack:
        return None
    if syn:  # a retransmitted SYN-ACK
        return state, fins
    side = FIN_REPLY if reply else FIN_ORIG
    if fin and not fins & side:
        fins |= side
        return (CtState.TIME_WAIT if fins == FIN_ORIG | FIN_REPLY else CtState.FIN_WAIT), fins
    if state is CtState.FIN_WAIT and not fin and not fins & side:
        return CtState.CLOSE_WAIT, fins
    return state, fins


_FINISHING = (CtState.FIN_WAIT, CtState.CLOSE_WAIT)


def claim_ttl(timeouts: Timeouts, entry: CtEntry) -> float:
    """How long the SNAT port claim of ``entry`` lasts when written: its timeout, except
    that a closing TCP connection's claim covers TIME_WAIT at once (so its later steps,
    CLOSE_WAIT and TIME_WAIT, need not touch the pool)."""
    timeout = timeouts.of(entry.orig, entry.state)
    if entry.orig.proto == IPPROTO_TCP and entry.state in _FINISHING:
        return max(timeout, timeouts.time_wait)
    return timeout


def claim_due(timeouts: Timeouts, old: CtEntry, new: CtEntry, now: float) -> bool:
    """Whether writing ``new`` over ``old`` must refresh the SNAT port claim too.

    Not when the claim already covers the connection closely enough: (a) the step
    after creation (SYN_SENT → SYN_RECV, an echo's first reply) within the refresh
    fraction, whose claim ttl equals the creation's — the claim then ends at most
    ``refresh_fraction`` of the timeout before the record; (b) the steps of a closing
    connection (FIN_WAIT → CLOSE_WAIT → TIME_WAIT), whose claim was given TIME_WAIT's
    length when the first FIN was written. Refreshes of an unchanged state always
    renew it. A claim ending before its record is harmless: the reply tuple stays
    unique through the mirror's create-only write (``nat.py``); the claim only steers
    new connections away from ports in use."""
    if new.state is old.state:
        return True
    if old.orig.proto == IPPROTO_TCP and old.state in _FINISHING:
        return new.state not in _FINISHING and new.state is not CtState.TIME_WAIT
    ttl = claim_ttl(timeouts, new)
    return not (
        old.last_seen == old.created
        and ttl == claim_ttl(timeouts, old)
        and now - old.created < ttl * timeouts.refresh_fraction
    )
