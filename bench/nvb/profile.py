"""Sampling profiles of netvirt's processes under load (py-spy), summarized as text.

``py-spy record --format raw`` writes collapsed stacks (``frame;frame;... count``);
:func:`summarize` turns them into the functions that hold the CPU: self time
(the leaf frame) and inclusive time (anywhere on the stack), in % of samples.
An extra, uncounted run of the workload is made while py-spy samples, so the
profiler's overhead never leaks into the figures.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path

from nvb.system import Machine, Proc, wait_for


def _done(proc: Proc) -> bool:
    return not proc.alive()


log = logging.getLogger("nvb")
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def _name(frame: str) -> str:
    """``func (path/to/module.py:123)`` -> ``module.py:func`` (the line dropped)."""
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    return f"{Path(m.group('file')).name}:{m.group('func')}"


def summarize(collapsed: str, top: int = 15) -> dict[str, list[tuple[str, float]]]:
    """Top functions by self and by inclusive share of the samples."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_name(f) for f in stack.split(";") if f]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    if not total:
        return {"self": [], "inclusive": []}
    # the trunk (entry points, the main loop) is on nearly every stack: leave it out
    branches = [(k, v) for k, v in inclusive.most_common() if v < 0.9 * total][:top]
    return {
        "self": [(k, 100.0 * v / total) for k, v in own.most_common(top)],
        "inclusive": [(k, 100.0 * v / total) for k, v in branches],
        "samples": [("total", float(total))],
    }


def available() -> bool:
    return shutil.which("py-spy") is not None


def record(
    m: Machine, label: str, pids: dict[str, int], seconds: float, workload: Callable[[], object]
) -> dict[str, dict[str, list[tuple[str, float]]]]:
    """Run ``workload`` while py-spy samples each pid; summaries per component."""
    procs: dict[str, tuple[Proc, Path]] = {}
    for component, pid in pids.items():
        out = m.workdir / f"profile-{label}-{component.replace(' ', '_')}.txt"
        out.unlink(missing_ok=True)
        argv = ["py-spy", "record", "--nonblocking", "--format", "raw", "--rate", "200"]
        argv += ["--duration", str(int(seconds) + 2), "--pid", str(pid), "--output", str(out)]
        procs[component] = (m.start(f"py-spy-{label}-{component}", argv), out)
    workload()
    summaries = {}
    for component, (proc, out) in procs.items():
        try:
            wait_for(f"py-spy {component}", partial(_done, proc), seconds + 30)
        except Exception:
            proc.stop()
        if out.exists():
            summaries[component] = summarize(out.read_text())
        else:
            log.warning("py-spy wrote nothing for %s: %s", component, proc.output()[-300:])
    return summaries
