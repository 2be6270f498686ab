"""The datapath process and CPython's garbage collector: pauses measured, heap frozen.

Why. The packet loop allocates per packet (keys, lists, small tuples), so
CPython's cyclic collector runs often; a young collection is short, but
every so often a full one walks every tracked object of the process —
compiled rules, the classifier's subtables, module objects — while packets
wait in the rings. Two measures, both cheap:

* :class:`GcPauses` times every collection (``gc.callbacks``) per generation:
  count, total and longest pause, and a histogram, in the datapath's status,
  so a latency tail can be told apart from a collection.
* :func:`spare_survivors` (the default since session 11) raises the middle
  generation's threshold: short-lived objects die before they reach the old
  generation, whose growth is what triggers full collections.
* :func:`tune` raises the young-generation threshold (fewer young
  collections, each still bounded: the objects of a few hundred packets) and
  :func:`settle` freezes what exists after an install (``gc.freeze``: the
  rules and everything built with them move to the permanent generation, so
  full collections walk only what was allocated since). Freezing is a list
  splice, not a walk; rules removed later stay in the permanent generation
  until the process ends unless freed by reference counting, which rules
  are (they hold no cycles).
"""

from __future__ import annotations

import gc
import time
from typing import Any

BUCKETS_MS = (0.1, 0.5, 1.0, 5.0, 10.0, 50.0)  # histogram upper bounds; one more for the rest
YOUNG_THRESHOLD = 20_000  # allocations between young collections (CPython's default: 700)
MIDDLE_THRESHOLD = 1_000  # young collections per middle one (CPython's default: 10)


class GcPauses:
    """Collection pauses of this process, per generation (install once; :meth:`close`)."""

    def __init__(self) -> None:
        self.count = [0, 0, 0]
        self.total_ms = [0.0, 0.0, 0.0]
        self.max_ms = [0.0, 0.0, 0.0]
        self.histogram = [0] * (len(BUCKETS_MS) + 1)
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        pause = (time.perf_counter() - self._started) * 1000.0
        generation = int(info.get("generation", 2))
        self.count[generation] += 1
        self.total_ms[generation] += pause
        if pause > self.max_ms[generation]:
            self.max_ms[generation] = pause
        index = 0
        while index < len(BUCKETS_MS) and pause > BUCKETS_MS[index]:
            index += 1
        self.histogram[index] += 1

    def as_dict(self) -> dict[str, object]:
        return {
            "collections": list(self.count),
            "pause_ms_total": [round(t, 3) for t in self.total_ms],
            "pause_ms_max": [round(t, 3) for t in self.max_ms],
            "histogram_ms": {
                **{f"le_{b:g}": n for b, n in zip(BUCKETS_MS, self.histogram, strict=False)},
                "more": self.histogram[-1],
            },
            "threshold": list(gc.get_threshold()),
            "frozen": gc.get_freeze_count(),
        }

    def close(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)


def spare_survivors(middle: int = MIDDLE_THRESHOLD) -> None:
    """The datapath's default: young collections as CPython makes them (short, so the
    latency tail keeps its shape), but a middle collection only every ``middle`` young
    ones instead of 10. Why: the offload keeps a small object per connection it tracks
    in the kernel for under a second (made, closed, released); at ~16k connections a
    second a young collection every ~1 ms promotes the live ones, and with CPython's
    ratios each soon reaches the old generation, whose growth then triggers a full
    collection every second or so — walks of every tracked object of the process,
    100 to 170 ms each, ~15 % of the datapath's CPU in a connection-rate run. Examined
    once a second instead, nearly all of them are dead by then (measured on the lab:
    25 full collections, 3.3 s, in three 5 s runs → none, 0.24 s; the connection rate
    up ~5 %; ping's tail unchanged)."""
    young, _, old = gc.get_threshold()
    gc.set_threshold(young, middle, old)


def tune(young: int = YOUNG_THRESHOLD) -> None:
    """Fewer young collections (the older generations keep CPython's ratios)."""
    _, middle, old = gc.get_threshold()
    gc.set_threshold(young, middle, old)


def settle() -> None:
    """After an install: move everything alive to the permanent generation."""
    gc.freeze()
