"""The datapath process and CPython's garbage collector: pauses measured, heap frozen.

Why. The packet loop allocates per packet (keys, lists, small tuples), so
CPython's cyclic collector runs often; a young collection is short, but
every so often a full one walks every tracked object of the process —
compiled rules, the classifier's subtables, module objects — while packets
wait in the rings. Two measures, both cheap:

* :class:`GcPauses` times every collection (``gc.callbacks``) per generation:
  count, total and longest pause, and a histogram, in the datapath's status,
  so a latency tail can be told apart from a collection.
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


def tune(young: int = YOUNG_THRESHOLD) -> None:
    """Fewer young collections (the older generations keep CPython's ratios)."""
    _, middle, old = gc.get_threshold()
    gc.set_threshold(young, middle, old)


def settle() -> None:
    """After an install: move everything alive to the permanent generation."""
    gc.freeze()
