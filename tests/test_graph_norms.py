"""Norms and per-channel parameters the way real model code writes them: functional norms on module
attributes, LayerNorm / GroupNorm / GRN over the channel dim (pruned exactly: the masked model computes its
statistics over the kept channels), layer scales and FrozenBatchNorm arithmetic, and submodules fx cannot
trace. Every model is checked with randomised norm parameters and statistics, so a wrong slim shows."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import prunekit as pk
from prunekit.testing import check_equivalence


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Norm statistics, affine parameters, layer scales and biases away from their init values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.5)
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)
        for _, p in model.named_parameters():
            if p.dim() <= 1 or p.shape.count(1) >= p.dim() - 1:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5 + 0.5)
    return model.eval()


def check(model, x, min_changed=1e-2, seeds=(0, 1)):
    """slim == masked on random masks (and the masks change the output a lot); returns the graph. Seeded, so the
    result does not depend on which tests ran before in the process."""
    torch.manual_seed(1234)
    randomize(model)
    for seed in seeds:
        eq = check_equivalence(model, x, ratio=0.5, seed=seed)
        assert eq.shape_ok
        assert eq.rel_error <= 1e-5, f"slim differs from masked by {eq.rel_error:.2e}"
        assert eq.changed >= min_changed, f"masks changed the output by only {eq.changed:.2e}"
    return eq.graph


def group_of(g, module, param="weight", dim=0):
    for grp in g.groups + g.frozen:
        if any((m.module, m.param, m.dim) == (module, param, dim) for m in grp.members):
            return grp
    raise AssertionError(f"{module}.{param} dim {dim} is in no group")


# -- functional norms -------------------------------------------------------------------------------------


class BNAct(nn.BatchNorm2d):
    """timm's BatchNormAct2d pattern: F.batch_norm on the module's own tensors, then an activation."""

    def forward(self, x):
        x = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.1, self.eps)
        return F.relu(x)


class FrozenBN(nn.Module):
    """torchvision's FrozenBatchNorm2d: per-channel arithmetic on buffers."""

    def __init__(self, c):
        super().__init__()
        for n, v in (("weight", torch.ones(c)), ("bias", torch.zeros(c)), ("running_mean", torch.zeros(c)),
                     ("running_var", torch.ones(c))):  # fmt: skip
            self.register_buffer(n, v)

    def forward(self, x):
        scale = self.weight * (self.running_var + 1e-5).rsqrt()
        bias = self.bias - self.running_mean * scale
        return x * scale.reshape(1, -1, 1, 1) + bias.reshape(1, -1, 1, 1)


class FunctionalNorms(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.bn = nn.Conv2d(3, 8, 3, padding=1), BNAct(8)
        self.b, self.fbn = nn.Conv2d(8, 8, 3, padding=1), FrozenBN(8)
        self.gamma = nn.Parameter(torch.ones(8))
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        x = self.bn(self.a(x))
        x = self.fbn(self.b(x)) * self.gamma.view(1, -1, 1, 1)
        return self.head(x)


def test_functional_norms_and_per_channel_arithmetic_are_members():
    g = check(FunctionalNorms(), torch.randn(2, 3, 8, 8))
    a, b = group_of(g, "a"), group_of(g, "b")
    assert not a.frozen and not b.frozen
    assert {("bn", p) for p in ("weight", "bias", "running_mean", "running_var")} <= {
        (m.module, m.param) for m in a.members
    }
    assert {("fbn", "running_var"), ("fbn", "weight"), ("", "gamma")} <= {(m.module, m.param) for m in b.members}


# -- norms over the channel dim -----------------------------------------------------------------------------


class LayerNorm2d(nn.LayerNorm):
    def forward(self, x):
        return F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps).permute(
            0, 3, 1, 2
        )


class VarMeanNorm(nn.Module):
    """LayerNorm over channels written with var_mean (timm's channels-first fast path)."""

    def __init__(self, c):
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.ones(c)), nn.Parameter(torch.zeros(c))

    def forward(self, x):
        s, u = torch.var_mean(x, dim=1, unbiased=False, keepdim=True)
        x = (x - u) * torch.rsqrt(s + 1e-6)
        return x * self.weight[:, None, None] + self.bias[:, None, None]


class GRN(nn.Module):
    """ConvNeXt-V2's global response norm (channels last): a mean over the channel dim."""

    def __init__(self, c):
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.zeros(c)), nn.Parameter(torch.zeros(c))

    def forward(self, x):
        gx = x.norm(p=2, dim=(1, 2), keepdim=True)
        nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
        return x + torch.addcmul(self.bias.view(1, 1, 1, -1), self.weight.view(1, 1, 1, -1), x * nx)


class ConvNeXtish(nn.Module):
    """A residual stream normalized over channels in four ways, with a layer scale and a GRN MLP."""

    def __init__(self, c=16):
        super().__init__()
        self.stem, self.n0 = nn.Conv2d(3, c, 2, stride=2), LayerNorm2d(c)
        self.dw, self.ln = nn.Conv2d(c, c, 3, padding=1, groups=c), nn.LayerNorm(c)
        self.fc1, self.grn, self.fc2 = nn.Linear(c, 2 * c), GRN(2 * c), nn.Linear(2 * c, c)
        self.ls = nn.Parameter(torch.full((c,), 1e-6))
        self.gn1, self.gn4, self.vm = nn.GroupNorm(1, c), nn.GroupNorm(4, c), VarMeanNorm(c)
        self.head = nn.Linear(c, 5)

    def forward(self, x):
        x = self.n0(self.stem(x))
        y = self.ln(self.dw(x).permute(0, 2, 3, 1))
        y = self.fc2(self.grn(F.gelu(self.fc1(y))))
        x = x + (y * self.ls).permute(0, 3, 1, 2)
        x = self.vm(self.gn4(self.gn1(x)))
        return self.head(x.mean((2, 3)))


def test_norms_over_channels_prune_exactly():
    model = ConvNeXtish()
    g = check(model, torch.randn(2, 3, 8, 8))
    stream, mlp = group_of(g, "stem"), group_of(g, "fc1")
    assert not stream.frozen and not mlp.frozen, (stream.reasons, mlp.reasons)
    assert {("", "ls"), ("ln", "weight"), ("n0", "weight"), ("gn1", "weight"), ("vm", "weight")} <= {
        (m.module, m.param) for m in stream.members
    }
    kinds = sorted((s.module, s.kind) for s in g.stats)
    assert ("ln", "layer_norm") in kinds and ("n0", "layer_norm") in kinds and ("gn1", "group_norm") in kinds
    assert ("grn", "reduce") in kinds and ("vm", "reduce") in kinds
    # GroupNorm with 4 groups prunes whole groups: channels of one group are kept or pruned together
    keep = {grp.id: torch.ones(grp.size, dtype=torch.bool) for grp in g.groups}
    member = next(m for m in stream.members if m.module == "gn4")
    ch = member.channels[member.positions.argsort()].view(4, 4)
    assert all(len(set(row.tolist())) == 1 for row in ch), "a group's channels are one unit"
    keep[stream.id][ch[1, 0]] = False
    small = pk.slim(model, g, keep)
    assert small.gn4.num_groups == 3 and small.gn4.num_channels == 12 and small.ln.normalized_shape == (12,)


def test_masked_statistics_follow_mask_changes_and_never_reach_the_slimmed_model():
    model = randomize(ConvNeXtish())
    x = torch.randn(2, 3, 8, 8)
    g = pk.build_graph(model, x)
    masked = copy.deepcopy(model)
    for seed in (0, 1):  # the second call changes the masks already installed
        keep = pk.testing.random_keep(g, 0.5, seed)
        pk.apply_masks(masked, g, keep)
        small = pk.slim(masked, g, keep)
        with torch.no_grad():
            torch.testing.assert_close(small(x), masked(x), rtol=1e-5, atol=1e-5)
        assert "forward" not in small.ln.__dict__ and not any("_pk_" in n for n, _ in small.named_buffers())
        assert not any("_pk_" in k for k in masked.state_dict()), "masks are not saved with the weights"
    # training mode (dropout, BN batch statistics) takes the masked path too, and gradients flow
    masked.train()
    out = masked(x)
    out.sum().backward()
    assert masked.stem.weight.grad is not None
    # keeping every channel gives the module its own forward back
    pk.apply_masks(masked, g, g.full_keep())
    assert "forward" not in masked.ln.__dict__


# -- submodules fx cannot trace, and subclasses of standard layers -----------------------------------------


class PadSame(nn.Conv2d):
    """A Conv2d subclass with a forward of its own (timm's Conv2dSame pattern), untraceable by fx."""

    def forward(self, x):
        ih = int(x.shape[-1])  # int() of a traced size: fx cannot follow
        pad = max((ih + self.stride[0] - 1) // self.stride[0] * self.stride[0] - ih + self.kernel_size[0] - 1, 0)
        return super().forward(F.pad(x, (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2)))


class WithUntraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.bn = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.odd = PadSame(8, 8, 3)
        self.b, self.c = nn.Conv2d(8, 8, 1), nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.c(torch.relu(self.b(self.odd(self.bn(self.a(x))))))


def test_untraceable_subclass_is_kept_whole_unless_verified():
    model = WithUntraceable()
    g = check(model, torch.randn(2, 3, 8, 8))
    assert list(g.opaque) == ["odd"]
    assert group_of(g, "a").frozen and "odd" in group_of(g, "a").reasons[0]
    assert not group_of(g, "b").frozen


@pytest.fixture(scope="module")
def timm():
    return pytest.importorskip("timm")


def test_timm_layers(timm):
    """timm's own classes: LayerNorm2d, GRN, BatchNormAct2d, GroupNormAct, Conv2dSame (as its parent)."""
    from timm.layers import BatchNormAct2d, Conv2dSame, GroupNormAct, LayerNorm2d
    from timm.layers.grn import GlobalResponseNorm

    class Net(nn.Module):
        def __init__(self, c=16):
            super().__init__()
            self.stem, self.n0 = Conv2dSame(3, c, 3, stride=2), BatchNormAct2d(c)
            self.a, self.ln = nn.Conv2d(c, c, 1), LayerNorm2d(c)
            self.fc1, self.grn = nn.Conv2d(c, 2 * c, 1), GlobalResponseNorm(2 * c, channels_last=False)
            self.fc2, self.gn = nn.Conv2d(2 * c, c, 1), GroupNormAct(c, num_groups=4)
            self.head = nn.Conv2d(c, 3, 1)

        def forward(self, x):
            x = self.n0(self.stem(x))
            x = x + self.fc2(self.grn(F.gelu(self.fc1(self.ln(self.a(x))))))
            return self.head(self.gn(x))

    model = Net()
    g = check(model, torch.randn(2, 3, 9, 9))
    assert "stem" in g.opaque  # fx cannot trace Conv2dSame: it is kept whole, and pruned as its parent
    assert not group_of(g, "stem").frozen and not group_of(g, "fc1").frozen


def test_weight_standardized_convs_prune_input_channels_exactly(timm):
    """timm's StdConv2d / ScaledStdConv2d (NF-Nets, BiT) standardize each filter over its input channels: the
    masked model standardizes over the kept inputs (a statistics site), so inputs prune as outputs do."""
    from timm.layers import ScaledStdConv2d, StdConv2d

    class Net(nn.Module):
        def __init__(self, c=12):
            super().__init__()
            self.a, self.b = ScaledStdConv2d(3, c, 3), StdConv2d(c, c, 3, padding=1)
            self.dw, self.c = ScaledStdConv2d(c, c, 3, padding=1, groups=c), ScaledStdConv2d(c, 4, 1)

        def forward(self, x):
            x = F.relu(self.a(x))
            x = x + F.relu(self.b(x))
            return self.c(F.relu(self.dw(x))).mean((2, 3))

    model = Net()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, ScaledStdConv2d):
                m.gain.uniform_(0.5, 1.5)
    g = check(model, torch.randn(2, 3, 10, 10))
    grp = group_of(g, "a")
    assert not grp.frozen and group_of(g, "b", dim=1) is grp and group_of(g, "a", "gain") is grp
    assert {(s.module, s.kind) for s in g.stats} == {(n, "weight_std") for n in "abc"}  # not the depthwise dw
    keep = {grp.id: torch.arange(12) % 3 != 0}
    small = pk.slim(model, g, {**g.full_keep(), **keep})
    assert small.b.weight.shape == (8, 8, 3, 3) and small.a.gain.shape[0] == 8 and small.c.in_channels == 8


# -- channel counts written in attributes, and sizes taken from other channels ------------------------------


class Scale(nn.Module):
    """MetaFormer's layer scale: a view to a size tuple kept as an attribute, which slimming updates."""

    def __init__(self, c):
        super().__init__()
        self.shape = (c, 1, 1)
        self.scale = nn.Parameter(torch.ones(c))

    def forward(self, x):
        return x * self.scale.view(self.shape)


class LiteralScale(Scale):
    def forward(self, x):
        return x * self.scale.view(8, 1, 1)  # a literal in the code: slimming cannot update it


class ForeignSize(nn.Module):
    """edgenext's XCA pattern: a reshape sized with the channel count of another tensor."""

    def __init__(self, c=8):
        super().__init__()
        self.q, self.v = nn.Linear(c, c), nn.Linear(c, c)

    def forward(self, x):
        b, n, c = x.shape
        return self.v(x).transpose(1, 2).reshape(b, n, c) + self.q(x)


class Attrs(nn.Module):
    def __init__(self, scale):
        super().__init__()
        self.a, self.s, self.b = nn.Conv2d(3, 8, 3, padding=1), scale(8), nn.Conv2d(8, 8, 1)
        self.f, self.head = ForeignSize(8), nn.Linear(8, 4)

    def forward(self, x):
        x = self.b(self.s(self.a(x)))
        return self.head(self.f(x.flatten(2).transpose(1, 2)))


def test_size_attributes_are_updated_and_literal_or_foreign_sizes_freeze():
    g = check(Attrs(Scale), torch.randn(2, 3, 6, 6))
    assert not group_of(g, "a").frozen and g.size_attrs == [("s", "shape", 0, "_pk_size:shape:0")]
    keep = {grp.id: torch.ones(grp.size, dtype=torch.bool) for grp in g.groups}
    keep[group_of(g, "a").id][:3] = False
    assert pk.slim(Attrs(Scale), g, keep).s.shape == (5, 1, 1)
    g = check(Attrs(LiteralScale), torch.randn(2, 3, 6, 6), min_changed=0)
    assert group_of(g, "a").frozen
    # the reshape uses the channel count of b's output for v's channels: both are frozen
    assert group_of(g, "b").frozen and "channel count of other channels" in " ".join(group_of(g, "b").reasons)
    assert group_of(g, "f.v").frozen


class LaterCoupled(nn.Module):
    """timm Swin's pattern: the attention output is viewed with the C of the block's input, and only the
    residual add after it couples the two channel sets; torch.roll shifts positions, not channels."""

    def __init__(self, c=8, roll_channels=False):
        super().__init__()
        self.embed, self.proj, self.head = nn.Linear(3, c), nn.Linear(c, c), nn.Linear(c, 4)
        self.roll_channels = roll_channels

    def forward(self, x):  # x: B, H, W, 3
        x = self.embed(x)
        B, H, W, C = x.shape
        y = torch.roll(x, shifts=(1, -1), dims=(1, 2)).view(B, H * W, C)
        y = self.proj(F.relu(y)).view(B, H, W, C)  # sized with x's C: y's channels are proj's
        x = x + y
        if self.roll_channels:
            x = torch.roll(x, 1, dims=3)
        return self.head(x).mean((1, 2))


def test_sizes_from_channels_coupled_later_and_roll():
    g = check(LaterCoupled(), torch.randn(2, 4, 4, 3))
    assert not group_of(g, "embed").frozen and group_of(g, "proj") is group_of(g, "embed")
    g = check(LaterCoupled(roll_channels=True), torch.randn(2, 4, 4, 3), min_changed=0)
    assert group_of(g, "embed").frozen and "rolls the channel dim" in " ".join(group_of(g, "embed").reasons)


def test_plan_round_trip_keeps_statistics_sites_and_size_attributes(tmp_path):
    model = randomize(ConvNeXtish())
    x = torch.randn(2, 3, 8, 8)
    g = pk.build_graph(model, x)
    keep = pk.testing.random_keep(g, 0.5, 3)
    small = pk.slim(model, g, keep)
    pk.save_pruned(str(tmp_path / "p.pt"), small, g, keep)
    again = pk.load_pruned(str(tmp_path / "p.pt"), model=ConvNeXtish())
    g2 = pk.ChannelGraph.from_dict(g.to_dict())
    assert [s.to_dict() for s in g2.stats] == [s.to_dict() for s in g.stats] and g2.size_attrs == g.size_attrs
    with torch.no_grad():
        torch.testing.assert_close(again(x), small(x))


class FLinear(nn.Linear):
    """timm's Linear: F.linear on its own parameters."""

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)


class FConv(nn.Conv2d):
    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class NormedConv(nn.Conv2d):
    def forward(self, x):  # each filter normalized over its input channels: pruning one changes the rest
        w = self.weight / self.weight.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        return F.conv2d(x, w, self.bias, self.stride, self.padding)


def test_functional_layers_on_their_own_parameters():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = FConv(3, 8, 3, padding=1), FConv(8, 8, 3, padding=1, groups=8)
            self.s = NormedConv(8, 6, 1)
            self.fc, self.head = FLinear(6, 12), nn.Linear(12, 4)

        def forward(self, x):
            return self.head(torch.relu(self.fc(self.s(self.b(self.a(x))).mean((2, 3)))))

    g = check(Net(), torch.randn(2, 3, 6, 6))
    assert not group_of(g, "fc").frozen and group_of(g, "a") is group_of(g, "b")  # depthwise: one space
    # F.conv2d with a weight normalized over its input channels is no conv rule: its input stays whole
    assert group_of(g, "a").frozen and "conv2d" in group_of(g, "a").reasons[0]
