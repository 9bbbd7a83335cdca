"""PNG plots of runs (matplotlib, Agg backend: no display needed).

- ``accuracy_vs_macs.png``: final top-1 against MACs for every strategy (the dense baseline as a star);
- ``kept_channels.png``: channels kept per prunable group (layer), one bar series per strategy;
- ``exploration_<strategy>.png``: kept channels per group over training, from the controller's events
  (for CHEX: how the widths move while it prunes and regrows).

Rows are labelled as the table tells them apart (``label``: the strategy, with the budget or the run directory
when ``prunekit report`` gathered several); point labels are moved apart where they would overprint, and
series get distinct colours however many there are (``colors``), with labels at the line ends where a
legend would be too long.
"""

from __future__ import annotations

import json
import math
import os
import re
from typing import Any

LEGEND_MAX = 20  # series beyond this are labelled at their line ends instead of in a legend


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _ok(results: list[Any]) -> list[Any]:
    return [r for r in results if getattr(r, "status", "ok") == "ok" and r.top1 is not None]


def label(r: Any) -> str:
    """A result's name in plots: its run directory label, else the strategy with its budget when set."""
    if getattr(r, "run_label", None):
        return r.run_label
    budget = getattr(r, "budget", None)
    return f"{r.name} ({budget})" if budget else r.name


def _file_part(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "-", text).strip("-") or "run"


def colors(n: int) -> list[tuple[float, float, float, float]]:
    """``n`` distinct colours: tab10 up to 10, tab20 up to 20, else evenly spaced along ``turbo``."""
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    cmap = colormaps["turbo"]
    return [cmap(0.05 + 0.9 * i / (n - 1)) for i in range(n)]


def _text_box(ann: Any, renderer: Any) -> Any:
    """The display-space box of an annotation's text alone (an Annotation's own extent includes its leader line)."""
    from matplotlib.text import Text

    ann.update_positions(renderer)  # where the text goes, as Annotation.get_window_extent does first
    return Text.get_window_extent(ann, renderer)


def _spread(targets: list[float], height: float, low: float, high: float) -> list[float]:
    """Bottoms for boxes of ``height`` wanted at ``targets`` (sorted ascending), at least ``height`` apart,
    inside [low, high - height] when they fit there."""
    pos = list(targets)
    for i in range(1, len(pos)):  # push up what sits on the label below
        pos[i] = max(pos[i], pos[i - 1] + height)
    if len(pos) * height <= high - low:  # they fit: bring the top ones back under the top, then clear the bottom
        pos[-1] = min(pos[-1], high - height)
        for i in range(len(pos) - 2, -1, -1):
            pos[i] = min(pos[i], pos[i + 1] - height)
        shift = max(0.0, low - pos[0])
        pos = [p + shift for p in pos]
    return pos


def place_labels(ax: Any, points: list[tuple[float, float]], texts: list[str], fontsize: float = 8) -> list[Any]:
    """Annotate each point with its text just right of it; labels whose boxes share horizontal room are spread
    vertically so that none overprints another (inside the axes when they fit), with a thin leader line to
    the point from a label that moved. Returns the annotations in the order of ``points``."""
    fig = ax.figure
    fig.canvas.draw()  # settle the view limits and layout: the boxes below are in display space
    renderer = fig.canvas.get_renderer()
    anns = [
        ax.annotate(t, p, textcoords="offset points", xytext=(5, 4), fontsize=fontsize) for p, t in zip(points, texts)
    ]
    boxes = [_text_box(a, renderer) for a in anns]
    frame = ax.get_window_extent(renderer)
    # clusters: labels whose horizontal extents overlap, transitively
    clusters: list[list[int]] = []
    right = -math.inf
    for i in sorted(range(len(anns)), key=lambda i: boxes[i].x0):
        if boxes[i].x0 > right:
            clusters.append([])
        clusters[-1].append(i)
        right = max(right, boxes[i].x1) if boxes[i].x0 <= right else boxes[i].x1
    px_to_pt = 72.0 / fig.dpi
    for members in clusters:
        members.sort(key=lambda i: (boxes[i].y0, points[i][0]))
        height = max(boxes[i].height for i in members) + 1.0  # a pixel between labels
        bottoms = _spread([boxes[i].y0 for i in members], height, frame.y0, frame.y1)
        for i, bottom in zip(members, bottoms):
            dy = bottom - boxes[i].y0
            if abs(dy) < 0.5:
                continue
            anns[i].remove()
            line = {"arrowstyle": "-", "lw": 0.5, "color": "0.5", "shrinkA": 0, "shrinkB": 2}
            anns[i] = ax.annotate(
                texts[i], points[i], textcoords="offset points", xytext=(5, 4 + dy * px_to_pt), fontsize=fontsize,
                arrowprops=line,
            )  # fmt: skip
    return anns


def accuracy_figure(results: list[Any]) -> Any:
    """The accuracy-vs-MACs figure of ``results`` (None when no run finished); ``plot_accuracy_vs_macs``
    writes it."""
    ok = _ok(results)
    if not ok:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4.2))
    palette = colors(len(ok))
    points, texts = [], []
    for r, color in zip(ok, palette):
        dense = r.strategy in ("none", "dense")
        name = label(r)
        marker = "*" if dense else "o"
        ax.scatter([r.macs / 1e6], [r.top1], s=120 if dense else 60, marker=marker, color=color, label=name)
        points.append((r.macs / 1e6, r.top1))
        texts.append(name)
    ax.set_xlabel("MACs per sample (M)")
    ax.set_ylabel("top-1 (%)")
    ax.set_title(f"accuracy vs MACs: {ok[0].dataset} / {ok[0].model}")
    ax.grid(alpha=0.3)
    if len(ok) <= LEGEND_MAX:
        ax.legend(fontsize=8)
    fig.tight_layout()
    place_labels(ax, points, texts)  # after the layout: label positions are in display space
    return fig


def plot_accuracy_vs_macs(results: list[Any], path: str) -> str | None:
    fig = accuracy_figure(results)
    if fig is None:
        return None
    fig.savefig(path, dpi=120)
    _plt().close(fig)
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
    for i, (r, color) in enumerate(zip(ok, colors(n))):
        kept = [r.kept.get(g, 0) for g in groups]
        ax.bar([x - 0.4 + width * (i + 1.5) for x in xs], kept, width, color=color, label=label(r))
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


def exploration_figure(events: list[dict[str, Any]], group_sizes: dict[str, int], title: str = "") -> Any:
    """The exploration figure (None with fewer than two events that record kept channels): one line per
    group in a colour of its own (``colors``); a legend up to ``LEGEND_MAX`` groups, else each line labelled
    at its end, the labels moved apart."""
    points = [(ev.get("step", i), ev.get("epoch"), _event_kept(ev)) for i, ev in enumerate(events)]
    points = [p for p in points if p[2]]
    if len(points) < 2:
        return None
    plt = _plt()
    groups = list(group_sizes) or list(points[0][2])
    legend = len(groups) <= LEGEND_MAX
    fig, ax = plt.subplots(figsize=(7 if legend else 8.5, 4.5))
    by_epoch = all(p[1] is not None for p in points)
    steps = [p[1] if by_epoch else p[0] for p in points]
    ends = []
    for g, color in zip(groups, colors(len(groups))):
        size = group_sizes.get(g) or max(p[2].get(g, 1) for p in points)
        ys = [p[2].get(g, size) / size for p in points]
        ax.plot(steps, ys, marker=".", lw=1, alpha=0.85, color=color, label=g if legend else None)
        ends.append((steps[-1], ys[-1]))
    ax.set_xlabel("epoch" if by_epoch else "optimizer step")
    ax.set_ylabel("kept fraction of the group")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"channel exploration {title}".strip())
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    if not legend:
        fig.subplots_adjust(right=0.8)  # room for the labels at the line ends
        for ann, color in zip(place_labels(ax, ends, groups, fontsize=5), colors(len(groups))):
            ann.set_annotation_clip(False)
            ann.set_color(color)
    return fig


def plot_exploration(
    events: list[dict[str, Any]], group_sizes: dict[str, int], path: str, title: str = ""
) -> str | None:
    """Kept channels per group after each event, as a fraction of the group's size, against the step."""
    fig = exploration_figure(events, group_sizes, title)
    if fig is None:
        return None
    fig.savefig(path, dpi=120)
    _plt().close(fig)
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
            name = label(r)
            p = plot_exploration(
                events, r.group_sizes, os.path.join(out_dir, f"exploration_{_file_part(name)}.png"), name
            )
            if p:
                out[f"exploration_{name}"] = p
    return out


__all__ = [
    "accuracy_figure",
    "colors",
    "exploration_figure",
    "label",
    "place_labels",
    "plot_accuracy_vs_macs",
    "plot_exploration",
    "plot_kept_channels",
    "write_plots",
]
