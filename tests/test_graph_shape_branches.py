"""Submodules whose forward branches on a tensor's shape (timm's ConvMlp: ``if x.shape[-2] < kernel_size``)
are traced along the branch the example inputs take instead of being kept whole: a branch on spatial sizes
leaves the channels prunable (and slimming stays exact), a branch on a channel count freezes the channels it
counts, and a branch on tensor values still keeps the module whole."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import prunekit as pk
from prunekit.testing import check_equivalence


class SpatialBranch(nn.Module):
    """timm's ConvMlp: pools small inputs up to the kernel size, then a kernel-sized conv."""

    def __init__(self, cin: int, cout: int, k: int = 4):
        super().__init__()
        self.k = k
        self.fc1 = nn.Conv2d(cin, cout, k)
        self.act = nn.ReLU()

    def forward(self, x):
        if x.shape[-2] < self.k or x.shape[-1] < self.k:
            x = F.adaptive_avg_pool2d(x, (max(self.k, x.shape[-2]), max(self.k, x.shape[-1])))
        return self.act(self.fc1(x))


class ChannelBranch(nn.Module):
    """A forward that takes another path when its input has more than 8 channels."""

    def forward(self, x):
        if x.shape[1] > 8:
            return x * 2.0
        return x - 1.0


class WholeShapeBranch(nn.Module):
    """Adds a shortcut only where the shapes agree: whole-shape equality reads the channel count too."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(12, 12, 1)

    def forward(self, x):
        y = self.conv(x)
        if y.shape == x.shape:
            return y + x
        return y


class ParamShapeBranch(nn.Module):
    """A branch on a parameter's shape, which slimming changes: not resolved, kept whole as before."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(12, 10, 1)

    def forward(self, x):
        if self.conv.weight.shape[0] > 8:
            return self.conv(x) * 2.0
        return self.conv(x)


class ValueBranch(nn.Module):
    def forward(self, x):
        if x.mean() > 0:  # data-dependent: no branch can be fixed for every input
            return x * 2.0
        return x


class Net(nn.Module):
    def __init__(self, head: nn.Module):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(16, 12, 3, padding=1, stride=2), nn.BatchNorm2d(12), nn.ReLU())
        self.head = head
        self.fc = nn.Linear(10, 5)

    def forward(self, x):
        x = self.head(self.body(self.stem(x)))
        return self.fc(x.mean((2, 3)))


def _group_of(graph, module, param="weight", dim=0):
    for g in graph.groups + graph.frozen:
        if any(m.module == module and m.param == param and m.dim == dim for m in g.members):
            return g
    raise AssertionError(f"{module}.{param} dim {dim} is in no group")


def test_a_branch_on_spatial_sizes_is_traced_and_its_channels_prune_exactly():
    torch.manual_seed(0)
    model = Net(SpatialBranch(12, 10)).eval()
    x = torch.randn(2, 3, 6, 6)  # body gives 3x3 < 4: the pooling branch is taken
    g = pk.build_graph(model, x)
    assert g.opaque == {} and g.shape_branches == ["head"] and "  head" in g.summary()
    assert type(g).from_dict(g.to_dict()).shape_branches == ["head"]
    assert not _group_of(g, "body.0").frozen  # the channels into the branching module prune
    assert not _group_of(g, "head.fc1").frozen
    eq = check_equivalence(model, x, ratio=0.5)
    assert eq.changed > 1e-3 and eq.rel_error < 1e-5, (eq.rel_error, eq.changed)


def test_a_branch_on_a_channel_count_freezes_those_channels():
    torch.manual_seed(0)
    model = Net(nn.Sequential(ChannelBranch(), nn.Conv2d(12, 10, 1))).eval()
    x = torch.randn(2, 3, 8, 8)
    g = pk.build_graph(model, x)
    assert g.opaque == {}
    body = _group_of(g, "body.0")
    assert any("a branch in 'head.0' on this channel count" in r for r in body.reasons), body.reasons
    assert not _group_of(g, "stem.0").frozen  # the rest still prunes
    eq = check_equivalence(model, x, ratio=0.5)
    assert eq.changed > 1e-3 and eq.rel_error < 1e-5


def test_a_branch_on_whole_shapes_freezes_the_channels_it_reads():
    model = Net(nn.Sequential(WholeShapeBranch(), nn.Conv2d(12, 10, 1))).eval()
    x = torch.randn(2, 3, 8, 8)
    g = pk.build_graph(model, x)
    assert g.opaque == {} and _group_of(g, "body.0").frozen and not _group_of(g, "stem.0").frozen
    eq = check_equivalence(model, x, ratio=0.5)
    assert eq.changed > 1e-3 and eq.rel_error < 1e-5


def test_a_branch_on_a_parameter_shape_keeps_its_module_whole():
    model = Net(ParamShapeBranch()).eval()
    g = pk.build_graph(model, torch.randn(2, 3, 8, 8))
    assert set(g.opaque) == {"head"}


def test_a_branch_on_tensor_values_keeps_its_module_whole():
    model = Net(nn.Sequential(ValueBranch(), nn.Conv2d(12, 10, 1))).eval()
    g = pk.build_graph(model, torch.randn(2, 3, 8, 8))
    assert set(g.opaque) == {"head.0"} and "control flow" in g.opaque["head.0"]
    assert _group_of(g, "body.0").frozen


@pytest.mark.slow  # timm's vgg13_bn at 224: its ConvMlp head was kept whole before this rule
def test_timm_vgg_convmlp_head_prunes_exactly():
    timm = pytest.importorskip("timm")
    model = timm.create_model("vgg11_bn", num_classes=10).eval()
    x = torch.randn(1, 3, 64, 64)  # 2x2 features before pre_logits: ConvMlp pools them up to 7x7
    g = pk.build_graph(model, x)
    assert g.opaque == {}
    assert not _group_of(g, "pre_logits.fc1").frozen
    eq = check_equivalence(model, x, ratio=0.5)
    assert eq.changed > 1e-3 and eq.rel_error < 1e-4
