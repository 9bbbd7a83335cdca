"""Readable plots: labels of close points do not overprint, and exploration plots with many groups give every
group a colour of its own (and label the line ends when a legend would be too long)."""

import itertools

import pytest
from matplotlib.text import Text

from prunekit.plots import LEGEND_MAX, accuracy_figure, exploration_figure
from prunekit.results import RunResult


def _boxes(ax):
    renderer = ax.figure.canvas.get_renderer()
    ax.figure.canvas.draw()
    return [Text.get_window_extent(t, renderer) for t in ax.texts]


def _overlapping(boxes):
    return [(a, b) for a, b in itertools.combinations(boxes, 2) if a.overlaps(b)]


def test_labels_of_close_points_do_not_overprint():
    # five pruned runs within 0.1 point and 2% of the MACs of each other, far from the dense one
    runs = [("none", 95.0, 2.53e6), ("chex", 89.90, 1.010e6), ("magnitude", 89.95, 1.000e6),
            ("random", 89.92, 1.020e6), ("l1", 89.97, 1.005e6), ("l2", 89.93, 1.000e6)]  # fmt: skip
    results = [RunResult(strategy=s, top1=t, macs=m, dataset="digits", model="resnet20") for s, t, m in runs]
    results[1].run_label = "compare-digits-resnet20-20250101-120000/chex"  # a long label among them
    fig = accuracy_figure(results)
    ax = fig.axes[0]
    assert sorted(t.get_text() for t in ax.texts) == sorted(
        ["dense", "compare-digits-resnet20-20250101-120000/chex", "magnitude", "random", "l1", "l2"]
    )
    boxes = _boxes(ax)
    assert not _overlapping(boxes)
    frame = ax.get_window_extent()
    assert all(frame.y0 <= b.y0 and b.y1 <= frame.y1 for b in boxes)  # they fit inside the axes here


@pytest.mark.parametrize("groups", [12, 30])
def test_exploration_gives_every_group_its_own_colour(groups):
    names = [f"layer{i}.conv" for i in range(groups)]
    events = [{"step": s, "epoch": s, "kept": {g: 16 - (i % 6) - s for i, g in enumerate(names)}} for s in range(4)]
    fig = exploration_figure(events, {g: 16 for g in names}, "chex")
    ax = fig.axes[0]
    colours = [tuple(line.get_color()) for line in ax.lines]
    assert len(colours) == groups and len(set(colours)) == groups
    if groups <= LEGEND_MAX:
        assert [t.get_text() for t in ax.get_legend().get_texts()] == names
    else:  # no legend: each line labelled at its end, in its colour, no two labels overprinting
        assert ax.get_legend() is None
        assert sorted(t.get_text() for t in ax.texts) == sorted(names)
        by_name = {t.get_text(): tuple(t.get_color()) for t in ax.texts}
        assert [by_name[g] for g in names] == colours
        assert not _overlapping(_boxes(ax))
