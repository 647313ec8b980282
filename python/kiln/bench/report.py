"""The benchmark report: JSON with every sample and the medians, and a PNG plot of speed ratios."""

from __future__ import annotations

import json
import os
import platform

# A colour per peer, the same whichever peers a machine has (C0-C2: what numpy, onnxruntime and torch got
# before IREE, as the first three peers in sorted order).
PEER_COLORS = {"numpy": "C0", "onnxruntime": "C1", "torch": "C2", "iree": "C3"}


def machine() -> dict:
    info = {"python": platform.python_version(), "cpus": len(os.sched_getaffinity(0))}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return info


def write_json(path: str, report: dict) -> None:
    with open(path, "w") as f:
        json.dump(report, f, indent=1)


def plot(path: str, report: dict) -> None:
    """Bars of Kiln's speed relative to each peer (peer time / Kiln time; > 1: Kiln is faster)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["results"]
    threads = sorted({r["threads"] for r in rows})
    peers = sorted({p for r in rows for p in r["speedup"]})
    fig, axes = plt.subplots(len(threads), 1, figsize=(12, 3.2 * len(threads) + 1), squeeze=False)
    for ax, t in zip(axes[:, 0], threads):
        sel = [r for r in rows if r["threads"] == t]
        names = [r["workload"] for r in sel]
        width = 0.8 / max(len(peers), 1)
        for j, peer in enumerate(peers):
            xs = [i + (j - (len(peers) - 1) / 2) * width for i in range(len(sel))]
            ys = [r["speedup"].get(peer, 0.0) for r in sel]
            ax.bar(xs, ys, width, label=f"vs {peer}", color=PEER_COLORS.get(peer))
            for x, y in zip(xs, ys):
                if y:
                    ax.text(x, y, f"{y:.2f}", ha="center", va="bottom", fontsize=7)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_xticks(range(len(sel)))
        ax.set_xticklabels(names, rotation=20, ha="right", fontsize=7)
        ax.set_ylabel("speed ratio (peer ms / Kiln ms)")
        ax.set_title(f"{t} thread{'s' if t > 1 else ''}")
        ax.legend(fontsize=8)
    fig.suptitle(f"Kiln {report['kiln_version']} on {report['machine'].get('cpu', '?')}: "
                 f"medians of {report['settings']['rounds']} rounds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
