"""PNG plots of runs (matplotlib, Agg backend: no display needed).

- ``accuracy_vs_macs.png``: final top-1 against MACs for every strategy (the dense baseline as a star);
- ``kept_channels.png``: channels kept per prunable group (layer), one bar series per strategy;
- ``exploration_<strategy>.png``: kept channels per group over training, from the controller's events
  (for CHEX: how the widths move while it prunes and regrows).
"""

from __future__ import annotations

import json
import os
from typing import Any


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _ok(results: list[Any]) -> list[Any]:
    return [r for r in results if getattr(r, "status", "ok") == "ok" and r.top1 is not None]


def plot_accuracy_vs_macs(results: list[Any], path: str) -> str | None:
    ok = _ok(results)
    if not ok:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for r in ok:
        dense = r.strategy in ("none", "dense")
        ax.scatter([r.macs / 1e6], [r.top1], s=120 if dense else 60, marker="*" if dense else "o", label=r.name)
        ax.annotate(r.name, (r.macs / 1e6, r.top1), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xlabel("MACs per sample (M)")
    ax.set_ylabel("top-1 (%)")
    ax.set_title(f"accuracy vs MACs: {ok[0].dataset} / {ok[0].model}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_kept_channels(results: list[Any], path: str) -> str | None:
    ok = [r for r in _ok(results) if r.kept and r.strategy not in ("none", "dense")]  # grey bars are dense
    if not ok:
        return None
    plt = _plt()
    groups = list(ok[0].group_sizes or ok[0].kept)
    n = len(ok)
    width = 0.8 / (n + 1)
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(groups) + 2), 4.5))
    xs = list(range(len(groups)))
    sizes = [ok[0].group_sizes.get(g, 0) for g in groups]
    ax.bar([x - 0.4 + width / 2 for x in xs], sizes, width, color="#dddddd", label="dense")
    for i, r in enumerate(ok):
        ax.bar([x - 0.4 + width * (i + 1.5) for x in xs], [r.kept.get(g, 0) for g in groups], width, label=r.name)
    ax.set_xticks(xs)
    ax.set_xticklabels(groups, rotation=70, ha="right", fontsize=7)
    ax.set_ylabel("channels kept")
    ax.set_title("kept channels per group")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _event_kept(ev: dict[str, Any]) -> dict[str, int] | None:
    for key in ("kept", "kept_per_group", "keep"):
        v = ev.get(key)
        if isinstance(v, dict) and v:
            return {k: (int(sum(x)) if isinstance(x, list) else int(x)) for k, x in v.items()}
    return None


def plot_exploration(
    events: list[dict[str, Any]], group_sizes: dict[str, int], path: str, title: str = ""
) -> str | None:
    """Kept channels per group after each event, as a fraction of the group's size, against the step."""
    points = [(ev.get("step", i), ev.get("epoch"), _event_kept(ev)) for i, ev in enumerate(events)]
    points = [p for p in points if p[2]]
    if len(points) < 2:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    groups = list(group_sizes) or list(points[0][2])
    by_epoch = all(p[1] is not None for p in points)
    steps = [p[1] if by_epoch else p[0] for p in points]
    for g in groups:
        size = group_sizes.get(g) or max(p[2].get(g, 1) for p in points)
        ys = [p[2].get(g, size) / size for p in points]
        ax.plot(steps, ys, marker=".", lw=1, alpha=0.8, label=g if len(groups) <= 12 else None)
    ax.set_xlabel("epoch" if by_epoch else "optimizer step")
    ax.set_ylabel("kept fraction of the group")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"channel exploration {title}".strip())
    ax.grid(alpha=0.3)
    if len(groups) <= 12:
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_plots(results: list[Any], out_dir: str) -> dict[str, str]:
    """All plots for ``results`` into ``out_dir``; returns {name: path} of those written."""
    out: dict[str, str] = {}
    p = plot_accuracy_vs_macs(results, os.path.join(out_dir, "accuracy_vs_macs.png"))
    if p:
        out["accuracy_vs_macs"] = p
    p = plot_kept_channels(results, os.path.join(out_dir, "kept_channels.png"))
    if p:
        out["kept_channels"] = p
    for r in _ok(results):
        ev_path = os.path.join(r.run_dir or "", "events.json")
        if r.run_dir and os.path.exists(ev_path):
            with open(ev_path) as f:
                events = json.load(f)
            p = plot_exploration(events, r.group_sizes, os.path.join(out_dir, f"exploration_{r.name}.png"), r.name)
            if p:
                out[f"exploration_{r.name}"] = p
    return out


__all__ = ["plot_accuracy_vs_macs", "plot_exploration", "plot_kept_channels", "write_plots"]
