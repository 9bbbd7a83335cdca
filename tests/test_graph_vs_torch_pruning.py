"""Torch-Pruning's DependencyGraph as a second oracle: on every torchvision CNN where it builds, its
partition of the prunable conv/linear output channels into coupled sets must equal ours, except for the
allow-listed, explained differences below (also documented in docs/graph.md). The comparison logic lives
in benchmarks/tp_compare.py. CI runs a representative subset; the rest of the zoo is `slow`."""

import sys
from pathlib import Path

import pytest
import torchvision
from torch import nn

pytest.importorskip("torch_pruning")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from tp_compare import compare, make_model  # noqa: E402

CI_SUBSET = ["resnet18", "mobilenet_v2", "densenet121", "efficientnet_b0", "googlenet"]
SKIP = {
    "vit_h_14": "2.5 GB of weights", "regnet_y_128gf": "2.6 GB of weights",
}  # fmt: skip
TRANSFORMERS = ("vit_", "swin_", "maxvit_")

# Torch-Pruning cannot build a dependency graph on these; we can (the zoo test checks our graph on them).
TP_FAILS = {
    "shufflenet_v2_x0_5": "TP's channel-shuffle handling divides by zero (view -> transpose -> view)",
    "shufflenet_v2_x1_0": "same",
    "shufflenet_v2_x1_5": "same",
    "shufflenet_v2_x2_0": "same",
}

# Channels TP prunes that we freeze. Allowed only as a coverage difference: on the channels both sides
# prune, the partition must still be identical, and we never prune a channel TP does not. (ConvNeXt's
# LayerNorm stream was here until the masked model learned to normalize over the kept channels.)
# Grouped convs (not depthwise): we prune them by whole groups, TP channel by channel. On these models our
# partition is coarser than TP's, and every coarser set runs through a grouped conv.
GROUPED_CONV = (
    "Grouped conv: we couple every channel of a conv group into one unit (input group j with output group j), "
    "so any keep mask leaves a valid grouped conv with fewer groups. TP couples input channel i with output "
    "channel i of the grouped conv, a finer partition that is only valid if every group keeps the same number "
    "of channels, a constraint its pruner enforces outside the dependency graph."
)
OURS_COARSER_ALLOWED = {
    name: GROUPED_CONV
    for name in torchvision.models.list_models(module=torchvision.models)
    if name.startswith(("regnet_", "resnext")) and name not in SKIP
}

ONLY_TP_ALLOWED: dict[str, str] = {}


def cnn_names():
    names = sorted(torchvision.models.list_models(module=torchvision.models))
    return [n for n in names if n not in SKIP and not n.startswith(TRANSFORMERS)]


def params():
    return [n if n in CI_SUBSET else pytest.param(n, marks=pytest.mark.slow) for n in cnn_names()]


def test_allow_lists_name_real_models():
    names = set(cnn_names())
    for allowed in (TP_FAILS, ONLY_TP_ALLOWED, OURS_COARSER_ALLOWED, CI_SUBSET):
        assert set(allowed) <= names


@pytest.mark.parametrize("name", params())
def test_partition_matches_torch_pruning(name):
    model = make_model(name)
    r = compare(name, model=model)
    if not r.tp_ok:
        assert name in TP_FAILS, f"Torch-Pruning fails on {name} ({r.tp_error}): allow-list it with the reason"
        assert r.ours_pairs > 0, f"we build on {name} but find nothing prunable"
        return
    assert name not in TP_FAILS, f"Torch-Pruning now builds on {name}: drop it from TP_FAILS"
    if name in OURS_COARSER_ALLOWED:
        grouped = {
            n for n, m in model.named_modules()
            if isinstance(m, nn.Conv2d) and 1 < m.groups and not m.groups == m.in_channels == m.out_channels
        }  # fmt: skip
        assert r.ours_coarser, f"{name}: no longer differs from TP: drop it from OURS_COARSER_ALLOWED"
        for mods in r.ours_coarser:
            assert grouped & set(mods), f"{name}: we couple {mods} that TP keeps apart, and no grouped conv is involved"
    else:
        assert not r.ours_coarser, f"{name}: we couple channels TP keeps apart:\n{r.summary()}"
    assert not r.tp_coarser, f"{name}: TP couples channels we keep apart:\n{r.summary()}"
    assert not r.only_ours, f"{name}: we prune channels TP does not:\n{r.summary()}"
    if name in ONLY_TP_ALLOWED:
        assert r.only_tp, f"{name}: no longer differs from TP: drop it from ONLY_TP_ALLOWED"
    else:
        assert not r.only_tp, f"{name}: TP prunes channels we freeze:\n{r.summary()}"
