"""Every torchvision classification model: build the graph, prune 50% of each group at random, and check
that the slimmed model computes what the masked model does. CI runs a representative subset; the whole
zoo is `slow` (make test-all)."""

import pytest
import torch
import torchvision
from torch import nn

import prunekit as pk
from prunekit.testing import check_equivalence

# over ~1.5 GB of float32 weights: too big for a CPU test machine
TOO_BIG = {"vit_h_14", "regnet_y_128gf"}
TRANSFORMERS = ("vit_", "swin_", "maxvit_")
# ConvNeXt normalizes its residual stream with LayerNorm over channels: pruning would change the statistics,
# so the stream is frozen (with that reason) and its inverted-bottleneck channels (nn.Linear = 1x1 conv) prune
LN_STREAM = ("convnext_",)
CI_SUBSET = {
    "resnet18", "mobilenet_v2", "mobilenet_v3_small", "densenet121", "efficientnet_b0", "shufflenet_v2_x0_5",
    "googlenet", "regnet_x_400mf", "resnext50_32x4d", "squeezenet1_1", "mnasnet0_5", "convnext_tiny",
}  # fmt: skip

ALL = sorted(torchvision.models.list_models(module=torchvision.models))


def input_size(name: str) -> int:
    if name.startswith(TRANSFORMERS):
        return 224  # fixed image size / window partitions
    if name.startswith("inception"):
        return 160
    return 64


def params(names):
    return [n if n in CI_SUBSET else pytest.param(n, marks=pytest.mark.slow) for n in names if n not in TOO_BIG]


def test_zoo_list_is_complete():
    assert len(ALL) == 80, "torchvision (0.29 has 80) changed its classification models; update TOO_BIG / CI_SUBSET"
    assert CI_SUBSET <= set(ALL)


@pytest.mark.parametrize("name", params(ALL))
def test_slim_matches_masked(name):
    torch.manual_seed(0)
    kwargs = {"aux_logits": False, "init_weights": False} if name in ("googlenet", "inception_v3") else {}
    model = torchvision.models.get_model(name, num_classes=10, **kwargs).eval()
    with torch.no_grad():  # zero-init heads and 1e-6 layer scales would hide a wrong slim: make them matter
        for m in model.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.05)
        for n, p in model.named_parameters():
            if "layer_scale" in n:
                p.fill_(1.0)
    s = input_size(name)
    x = torch.randn(2, 3, s, s)
    eq = check_equivalence(model, x, ratio=0.5, seed=1)
    assert eq.shape_ok
    assert eq.rel_error <= 1e-4, f"{name}: slimmed output differs from the masked one by {eq.rel_error:.2e}"
    assert eq.changed > 1e-5, f"{name}: masks did not change the output: the check would be vacuous"
    assert eq.macs_pruned < eq.macs_dense
    g = eq.graph
    assert g.groups, f"{name}: nothing prunable"
    if name.startswith(LN_STREAM):
        assert any("LayerNorm" in r for f in g.frozen for r in f.reasons)
        assert sum(1 for grp in g.groups if any(m.role == "out" for m in grp.members)) >= 9
    elif not name.startswith(TRANSFORMERS):
        convs = {n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
        outs = {m.module for grp in g.groups for m in grp.members if m.role == "out"}
        prunable_convs = outs & convs
        # every CNN keeps most of its convolutions prunable (frozen: the stem input, grouped-conv units...)
        assert len(prunable_convs) >= 0.5 * len(convs), f"{name}: {len(prunable_convs)}/{len(convs)} convs prunable"
    # physical MAC count of the slimmed model agrees with the graph's estimate of conv/linear MACs
    small = pk.slim(model, g, eq.keep)
    assert pk.count_macs(small, x[:1]) < pk.count_macs(model, x[:1])
