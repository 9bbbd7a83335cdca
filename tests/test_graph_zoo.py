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
# ConvNeXt normalizes its residual stream with LayerNorm over channels: the stream prunes exactly (the masked
# model normalizes over the kept channels), as do its inverted-bottleneck channels (nn.Linear = 1x1 conv)
LN_STREAM = ("convnext_",)
# ViT and Swin: the residual stream (embedding dim) prunes through their attention layers, heads kept whole
ATTENTION_STREAM = {"vit_": "conv_proj", "swin_": "features.0.0"}
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


TOL = 1e-4  # slimmed vs masked output, relative to the output's scale
MIN_CHANGE = 100 * TOL  # the masks must move the output far more than the tolerance, or the check is vacuous


@pytest.mark.parametrize("name", params(ALL))
def test_slim_matches_masked(name):
    torch.manual_seed(0)
    kwargs = {"aux_logits": False, "init_weights": False} if name in ("googlenet", "inception_v3") else {}
    model = torchvision.models.get_model(name, num_classes=10, **kwargs).eval()
    with torch.no_grad():  # zero-init heads would hide a wrong slim (check_equivalence randomizes the rest)
        for m in model.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.05)
    s = input_size(name)
    x = torch.randn(2, 3, s, s)
    # on a copy with random BN statistics and affine parameters, biases and layer scales
    eq = check_equivalence(model, x, ratio=0.5, seed=1)
    assert eq.shape_ok
    assert eq.rel_error <= TOL, f"{name}: slimmed output differs from the masked one by {eq.rel_error:.2e}"
    assert eq.changed >= MIN_CHANGE, f"{name}: masks changed the output by only {eq.changed:.1e}: vacuous check"
    assert eq.macs_pruned < eq.macs_dense
    g = eq.graph
    assert g.groups, f"{name}: nothing prunable"
    if name.startswith(LN_STREAM):
        assert g.stats and not any("LayerNorm" in r for f in g.frozen for r in f.reasons)
        assert any(m.module == "features.0.0" for grp in g.groups for m in grp.members), "stem stream prunable"
        assert sum(1 for grp in g.groups if any(m.role == "out" for m in grp.members)) >= 9
    elif name.startswith(tuple(ATTENTION_STREAM)):
        stem = next(v for k, v in ATTENTION_STREAM.items() if name.startswith(k))
        assert any(m.module == stem and m.role == "out" for grp in g.groups for m in grp.members), "stream prunable"
        # frozen: the input, the classifier, and in Swin V2 the position-bias MLP's ends (one value per head)
        frozen = {f.id for f in g.frozen if "cpb_mlp" not in f.id}
        assert frozen == {"input x", "heads.head" if name.startswith("vit_") else "head"}, frozen
    elif not name.startswith(TRANSFORMERS):
        convs = {n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
        outs = {m.module for grp in g.groups for m in grp.members if m.role == "out"}
        prunable_convs = outs & convs
        # every CNN keeps most of its convolutions prunable (frozen: the stem input, grouped-conv units...)
        assert len(prunable_convs) >= 0.5 * len(convs), f"{name}: {len(prunable_convs)}/{len(convs)} convs prunable"
    # the physical MAC count (ATen-level, torch.utils.flop_counter) of the dense and slimmed models equals the
    # graph's conv/linear MACs; transformers also multiply activations (attention), which g.macs leaves out
    dense, small = pk.count_macs(model, x[:1]), pk.count_macs(eq.slimmed, x[:1])
    if name.startswith(TRANSFORMERS):
        assert small < dense and eq.macs_dense <= dense and eq.macs_pruned <= small
    else:
        assert (dense, small) == (eq.macs_dense, eq.macs_pruned), f"{name}: counted vs graph MACs"


def test_randomize_parameters_leaves_no_init_constant():
    """What check_equivalence randomizes: BN statistics and affine parameters, biases, layer scales."""
    from prunekit.testing import randomize_parameters

    model = torchvision.models.get_model("convnext_tiny", num_classes=10)
    model.features[0].append(nn.BatchNorm2d(96))  # ConvNeXt has no BatchNorm of its own
    randomize_parameters(model, seed=0)
    seen = 0
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        leaf = name.rsplit(".", 1)[-1]
        if leaf in ("bias", "running_mean", "running_var", "layer_scale") or (leaf == "weight" and t.dim() == 1):
            seen += 1
            assert t.numel() < 2 or float(t.std()) > 0.02, f"{name} still constant"
    assert seen > 100
