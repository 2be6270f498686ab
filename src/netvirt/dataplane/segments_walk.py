"""The pipeline's side of segments (``segments.py``): where a segment starts, its replay,
its end. A mixin of :class:`~netvirt.dataplane.pipeline.Pipeline`, split out of
``pipeline.py``; the walk calls these at the points "Which walks" in ``segments.py``
names (a segment's start at a table, a conntrack action, the end of its frame).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from netvirt.dataplane.drops import DropReason
from netvirt.dataplane.fields import F
from netvirt.dataplane.segments import CtEnd, Recorder, Segment, SegmentCache, finish, start

if TYPE_CHECKING:
    from collections.abc import Sequence

    from netvirt.dataplane.pipeline import CtAction, Gate, Step, Verdict, _Ctx

MAX_STEPS = 256  # tables visited per packet, across every datapath
MAX_HOPS = 8  # datapaths entered per packet
_METADATA = F("metadata")


class SegmentSteps:
    """Segments in the table walk; see the module docstring."""

    if TYPE_CHECKING:  # what the pipeline provides

        def _conntrack(self, ctx: _Ctx, key: list[int], act: CtAction, table: int) -> Gate: ...
        def _next(self, ctx: _Ctx, key: list[int], table: int) -> int | None: ...
        def _execute(
            self, ctx: _Ctx, key: list[int], acts: Sequence[object], table: int
        ) -> Step: ...
        def _emit(self, ctx: _Ctx, key: list[int], dp: int, port: int, name: str) -> None: ...
        def _drop(
            self,
            verdict: Verdict,
            reason: DropReason,
            datapath: int,
            table: int | None,
            detail: str = "",
        ) -> None: ...

    def _boundary(self, ctx: _Ctx, key: list[int], table: int) -> Segment | None:
        """Where a segment may start: the cached one to replay, or start recording."""
        ctx.boundary = False
        seg = cast(SegmentCache, ctx.seg)
        segment = seg.lookup(table, key)
        if segment is not None:
            over = max(ctx.steps + segment.steps - MAX_STEPS, ctx.hops + segment.hops - MAX_HOPS)
            if over <= 0:  # (else the walk may hit a loop limit: walked to find out)
                return segment
        verdict = ctx.verdict
        n = (len(verdict.outputs), len(verdict.drops))
        ctx.rec = start(key, table, verdict.wildcards, ctx.steps, ctx.hops, n)
        return None

    def _replay(self, ctx: _Ctx, key: list[int], segment: Segment) -> Step:
        """What the walk of ``segment`` does, from the key it started with."""
        ctx.steps += segment.steps
        ctx.hops += segment.hops
        for index, value in segment.writes:
            key[index] = value
        verdict = ctx.verdict
        if segment.emit is not None:
            self._emit(ctx, key, *segment.emit)
        for reason in segment.drops:
            self._drop(verdict, reason, key[_METADATA], None)
        if verdict.wildcards is not None:  # the walk's first segment: its megaflow
            verdict.wildcards = None if segment.ct else list(segment.wild)
        union_reads(verdict, segment.wild)
        if segment.ct is None:
            return None
        table, act, rest = segment.ct
        if not (yield from self._conntrack(ctx, key, act, table)):
            return None
        if rest is None:
            return self._next(ctx, key, table)
        return (yield from self._execute(ctx, key, rest, table))

    def _close(self, ctx: _Ctx, key: list[int] | None, ct: CtEnd | None) -> None:
        """End the segment being recorded: at conntrack action ``ct``, or (None) where the
        frame it started in ended; cache it."""
        rec, verdict = cast(Recorder, ctx.rec), ctx.verdict
        ctx.rec = None
        union_reads(verdict, rec.wild)
        segment = finish(rec, key, verdict.outputs, verdict.drops, ctx.steps, ctx.hops, ct)
        if segment is not None and ctx.seg is not None:
            ctx.seg.insert(rec.table, rec.start, segment)


def union_reads(verdict: Verdict, wild: Sequence[int]) -> None:
    """OR a segment's read mask into the walk's (``Verdict.seg_reads``)."""
    have = verdict.seg_reads
    if have is None:
        verdict.seg_reads = list(wild)
        return
    for index, mask in enumerate(wild):
        if mask:
            have[index] |= mask
