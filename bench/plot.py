"""Plot the ratios netvirt / OVN and netvirt / kernel of a results file (matplotlib PNG).

    python3 bench/plot.py              # docs/perf/results.json -> docs/perf/ratios.png
    python3 bench/plot.py /tmp/nvb.json -o /tmp/ratios.png

One row per figure, log scale, 1 = parity. A bar is green where netvirt is
better than the reference (a ratio above 1 for "more is better" figures, below
1 for times, latencies and memory) and red where it is worse.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import Rectangle
from nvb import results
from nvb.results import Series

BARS = (
    ("vs_ovn", results.NETVIRT, "netvirt / OVN (best variant)", "//"),
    ("vs_ovn", results.NETVIRT_REDIS, "netvirt+Redis / OVN", ".."),
    ("vs_ovn", results.NETVIRT_OFFLOAD, "netvirt+eBPF / OVN", "xx"),
    ("vs_kernel", results.NETVIRT, "netvirt / kernel", ""),
)


def plot(data: dict[str, object], out: Path) -> int:
    series = [Series.from_json(s) for s in data["series"]]  # type: ignore[attr-defined]
    rows = results.ratio_rows(results.figures(series))
    if not rows:
        print("plot: no ratio to plot", file=sys.stderr)
        return 1
    height = 0.8 + 0.42 * len(rows)
    fig, ax = plt.subplots(figsize=(10, height))
    width = 0.26
    for k, (kind, backend, label, hatch) in enumerate(BARS):
        ys, xs, colors = [], [], []
        for i, row in enumerate(rows):
            value = getattr(row.ratios, kind).get(backend)
            if value is None or value <= 0:
                continue
            ys.append(i + (k - 1) * width)
            xs.append(value)
            colors.append("#3a7d44" if row.better(value) else "#b3362d")
        ax.barh(
            ys, xs, height=width, color=colors, hatch=hatch, edgecolor="white", label=label, left=0
        )
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([row.label for row in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("netvirt / reference (log scale; green: netvirt better, red: worse)")
    machine = data.get("machine", {})
    cores = machine.get("cores", "?") if isinstance(machine, dict) else "?"
    ax.set_title(
        f"netvirt vs OVN and the kernel ({data.get('started', '')}, {cores} cores)", fontsize=10
    )
    handles = [
        Rectangle((0, 0), 1, 1, facecolor="#888", hatch=h, edgecolor="white") for _, _, _, h in BARS
    ]
    ax.legend(handles, [b[2] for b in BARS], loc="lower right", fontsize=8)
    ax.grid(axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"plot: {out}")
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="?", default="docs/perf/results.json")
    parser.add_argument("-o", "--out", default="docs/perf/ratios.png")
    args = parser.parse_args(argv)
    return plot(json.loads(Path(args.results).read_text()), Path(args.out))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
