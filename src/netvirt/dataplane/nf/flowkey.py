"""The pipeline's conntrack adapter: flow keys in, ``ct_state``/``ct_mark``/NAT rewrites out.

Why a separate layer: :class:`~netvirt.dataplane.nf.conntrack.Conntrack` works
on tuples and batches of requests; the pipeline works on flow keys, one
conntrack action of one packet at a time. :class:`FlowKeyConntrack` bridges
the two in batches: the pipeline walks a whole packet batch side by side,
stops every packet at its next conntrack action and hands all of them over as
:class:`CtCall` s in one :meth:`FlowKeyConntrack.ct_batch` — one
``Conntrack.process_batch``, so one store round trip per step for the whole
batch instead of per packet.

*Association.* After a NAT rewrite, a later call of the same packet in the same
zone must reach the same connection although the key's tuple changed (Open
vSwitch keeps that association in the packet). Each call carries its packet's
own ``assoc`` dict (zone → ``(now, translated tuple, entry)``), passed to
conntrack as ``hint``; packets of one batch never see each other's.

*Store failures* never leave :meth:`ct_batch`: conntrack answers the calls that
needed the unreachable store with a result flagged ``unavailable`` (see
``Conntrack.fail``), and the call carries ``drop`` = ``STATE_UNAVAILABLE``
when the packet must be dropped. The one-call methods (``ct_next`` …) keep the
older ``ConnTracker`` interface for tests and tools, on the adapter's own
association (reset by :meth:`FlowKeyConntrack.begin_packet`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from netvirt.dataplane.actions import CtCommit, CtDnat, CtLb, CtNext, CtSnat
from netvirt.dataplane.drops import DropReason
from netvirt.dataplane.fields import F
from netvirt.dataplane.nf.codec import ECHO_PORT, PORT_PROTOCOLS, CtEntry, CtTuple, icmp_ident
from netvirt.dataplane.nf.codec import icmp_tuple as _icmp_tuple
from netvirt.dataplane.nf.conntrack import FAIL_POLICIES, Conntrack, CtRequest, CtResult
from netvirt.dataplane.nf.nat import NatRequest
from netvirt.state.jobs import Steps, run_steps

R = TypeVar("R")

CtAction = CtNext | CtCommit | CtDnat | CtSnat | CtLb
Assoc = dict[int, tuple[float, CtTuple, CtEntry]]

_ETH_TYPE, _IP_PROTO = F("eth.type"), F("ip.proto")
_IP4_SRC, _IP4_DST, _IP6_SRC, _IP6_DST = F("ip4.src"), F("ip4.dst"), F("ip6.src"), F("ip6.dst")
_TP_SRC, _TP_DST, _TCP_FLAGS = F("tp.src"), F("tp.dst"), F("tcp.flags")
_ICMP_TYPE, _CT_STATE, _CT_MARK = F("icmp.type"), F("ct_state"), F("ct_mark")
_IPV4, _IPV6 = 0x0800, 0x86DD
_NAT_REQUESTS_LIMIT = 4096  # NAT actions remembered (one per NAT/LB rule)


@dataclass(slots=True)
class CtCall:
    """One conntrack action of one packet, waiting for its batch to be answered.

    In: ``zone``, the packet's flow ``key`` (rewritten in place, as the one-call
    methods do), ``now``, the packet's ``assoc``, the ``action`` and, for
    ``ct_next`` on an ICMP error, the ``related`` quoted tuple. Out:
    ``result`` (the conntrack result, None when untracked or not called),
    ``state`` (``ct_next``'s ct_state bits, 0 for non-IP), ``ok`` (False:
    ``ct_lb`` found no backend), ``drop`` (the packet cannot go on:
    ``STATE_UNAVAILABLE``) and ``store_failed`` (the store could not be asked,
    whatever the policy made of it: such an outcome must not be cached).
    """

    zone: int
    key: list[int]
    now: float
    assoc: Assoc
    action: CtAction
    related: CtTuple | None = None
    result: object = None
    state: int = 0
    ok: bool = True
    drop: DropReason | None = None
    store_failed: bool = False


def tuple_of_key(key: Sequence[int]) -> CtTuple | None:
    """The tuple of a flow key; for ICMP echo the identifier is read from ``tp.src``."""
    if key[_ETH_TYPE] == _IPV4:
        v, src, dst = 4, key[_IP4_SRC], key[_IP4_DST]
    elif key[_ETH_TYPE] == _IPV6:
        v, src, dst = 6, key[_IP6_SRC], key[_IP6_DST]
    else:
        return None
    proto = key[_IP_PROTO]
    if proto in PORT_PROTOCOLS:
        return CtTuple(v, proto, src, dst, key[_TP_SRC], key[_TP_DST])
    if proto == (1 if v == 4 else 58):
        return _icmp_tuple(v, src, dst, key[_ICMP_TYPE], key[_TP_SRC])
    return CtTuple(v, proto, src, dst)


def write_tuple(key: list[int], t: CtTuple) -> None:
    """Write a (translated) tuple back into a flow key."""
    if t.ip_version == 4:
        key[_IP4_SRC], key[_IP4_DST] = t.src, t.dst
    else:
        key[_IP6_SRC], key[_IP6_DST] = t.src, t.dst
    if t.proto in PORT_PROTOCOLS:
        key[_TP_SRC], key[_TP_DST] = t.sport, t.dport
    elif t.is_icmp and ECHO_PORT in (t.sport, t.dport):
        key[_TP_SRC] = icmp_ident(t)


class FlowKeyConntrack:
    """The pipeline's ``ConnTracker`` over :class:`Conntrack` (see the module docstring).

    ``fail`` (``"closed"``/``"open"``), when given, sets the conntrack's
    store-failure policy. ``last`` is the last result, for traces.
    """

    def __init__(self, conntrack: Conntrack, *, fail: str | None = None) -> None:
        if fail is not None:
            if fail not in FAIL_POLICIES:
                raise ValueError(f"state failure policy must be closed or open, not {fail!r}")
            conntrack.fail = fail
        self.conntrack = conntrack
        self.last: CtResult | None = None
        self._assoc: Assoc = {}
        self._nat_requests: dict[int, tuple[CtAction, NatRequest]] = {}

    # -- batches (the pipeline) ----------------------------------------------------------
    def ct_batch(self, calls: Sequence[CtCall]) -> None:
        """Answer the calls of one step of a packet batch with one conntrack batch."""
        run_steps(self.conntrack.store, self.ct_steps(calls))

    def complete(self, steps: Steps[R]) -> R:
        """Drive a pipeline's step generator with synchronous round trips on the store."""
        return run_steps(self.conntrack.store, steps)

    def ct_steps(self, calls: Sequence[CtCall]) -> Steps[None]:
        """:meth:`ct_batch` as round trips yielded to its driver (``state/jobs.py``)."""
        waiting: list[CtCall] = []
        requests: list[CtRequest] = []
        for call in calls:
            request = self._request(call)
            if request is not None:
                waiting.append(call)
                requests.append(request)
        if not requests:
            return
        now = max(call.now for call in waiting)  # one clock reading per conntrack batch
        results = yield from self.conntrack.process_steps(requests, now)
        for call, result in zip(waiting, results, strict=True):
            self._apply(call, result)

    def _request(self, call: CtCall) -> CtRequest | None:
        """The call's conntrack request; None when it needs none (answered already)."""
        act = call.action
        if isinstance(act, CtLb) and not act.backends:
            call.ok = False
            return None
        t = tuple_of_key(call.key)
        if t is None:
            return None
        assoc = call.assoc.get(call.zone)
        hint = assoc[2] if assoc is not None and assoc[:2] == (call.now, t) else None
        commit, mark, nat = False, None, None
        if isinstance(act, CtCommit):
            commit, mark = True, act.mark
        elif not isinstance(act, CtNext):
            nat = self._nat_request(act)
        flags = call.key[_TCP_FLAGS]
        return CtRequest(call.zone, t, flags, commit, mark, nat, call.related, hint)

    def _nat_request(self, act: CtDnat | CtSnat | CtLb) -> NatRequest:
        """``NatRequest.from_action(act)``, built once per action: a rule's actions live
        as long as the rule, and both are immutable."""
        known = self._nat_requests.get(id(act))
        if known is not None and known[0] is act:
            return known[1]
        if len(self._nat_requests) >= _NAT_REQUESTS_LIMIT:
            self._nat_requests = {}
        request = NatRequest.from_action(act)
        self._nat_requests[id(act)] = (act, request)  # holds act: its id is not reused
        return request

    def _apply(self, call: CtCall, result: CtResult) -> None:
        self.last = result
        call.result, call.state = result, result.state
        call.store_failed = result.unavailable
        if result.drop is DropReason.STATE_UNAVAILABLE:
            call.drop = result.drop
            return
        key = call.key
        key[_CT_MARK] = result.mark
        if not isinstance(call.action, CtNext | CtCommit):
            write_tuple(key, result.tuple)
            key[_CT_STATE] = result.state
        call.ok = result.drop is not DropReason.NO_LB_BACKEND
        if result.entry is not None:
            call.assoc[call.zone] = (call.now, result.tuple, result.entry)

    # -- one call at a time (the ConnTracker protocol) ------------------------------------
    def begin_packet(self) -> None:
        """Forget the association of the one-call methods (a new packet begins)."""
        self._assoc.clear()

    def _one(
        self,
        zone: int,
        key: list[int],
        now: float,
        action: CtAction,
        related: CtTuple | None = None,
    ) -> CtCall:
        call = CtCall(zone, key, now, self._assoc, action, related)
        self.ct_batch([call])
        return call

    def ct_next(self, zone: int, key: list[int], now: float, related: CtTuple | None = None) -> int:
        """Look up (and advance) the connection: the ct_state bits (0 for non-IP)."""
        return self._one(zone, key, now, CtNext(), related=related).state

    def ct_commit(self, zone: int, key: list[int], now: float, mark: int | None) -> None:
        self._one(zone, key, now, CtCommit(mark))

    def ct_nat(self, zone: int, key: list[int], now: float, action: CtDnat | CtSnat) -> None:
        """Translate the key; a NAT failure leaves ``ct_state`` with ``ct.inv`` set."""
        self._one(zone, key, now, action)

    def ct_lb(self, zone: int, key: list[int], now: float, action: CtLb) -> bool:
        """Pick a backend and DNAT to it; False means drop with ``NO_LB_BACKEND``."""
        return self._one(zone, key, now, action).ok
