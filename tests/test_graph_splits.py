"""Fixed cuts of the channel dim whose sizes are module attributes (mixnet's ``torch.split(x, self.splits, 1)``,
res2net-style equal splits, dpn's and rexnet's ``x[:, :self.c]``): pruned inside each part, with the
attributes rewritten on slim; and groups split into parts so that no keep mask can empty a layer."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import prunekit as pk
from prunekit.testing import check_equivalence


def check(model, x, seeds=(0, 1, 2), min_changed=1e-2):
    for seed in seeds:
        eq = check_equivalence(model.eval(), x, ratio=0.5, seed=seed)
        assert eq.shape_ok and eq.rel_error <= 1e-5, eq.rel_error
        assert eq.changed >= min_changed
    return eq.graph


def group_of(g, module, param="weight", dim=0):
    found = [grp for grp in g.groups + g.frozen if any((m.module, m.param, m.dim) == (module, param, dim)
                                                        for m in grp.members)]  # fmt: skip
    assert found, f"{module}.{param} dim {dim} is in no group"
    return found


class Mixed(nn.Module):
    """mixnet's MixedConv2d: the channels split in parts of different sizes, one depthwise conv each."""

    def __init__(self, c=12, splits=(4, 8)):
        super().__init__()
        self.splits = list(splits)
        self.convs = nn.ModuleList(nn.Conv2d(n, n, 3 + 2 * i, padding=1 + i, groups=n) for i, n in enumerate(splits))

    def forward(self, x):
        parts = torch.split(x, self.splits, 1)
        return torch.cat([conv(parts[i]) for i, conv in enumerate(self.convs)], 1)


class EqualSplit(nn.Module):
    """res2net-style: equal parts by an attribute width, each with its own conv, summed into the next."""

    def __init__(self, width=4, scale=3):
        super().__init__()
        self.width = width
        self.convs = nn.ModuleList(nn.Conv2d(width, width, 3, padding=1) for _ in range(scale - 1))

    def forward(self, x):
        spx = torch.split(x, self.width, 1)
        out, sp = [], spx[0]
        for i, conv in enumerate(self.convs):
            sp = conv(sp if i == 0 else sp + spx[i])
            out.append(sp)
        return torch.cat([*out, spx[-1]], 1)


class DualPath(nn.Module):
    """dpn / rexnet: the first ``self.c`` channels are a residual path, the rest a dense path."""

    def __init__(self, c=6, extra=4):
        super().__init__()
        self.c = c
        self.a, self.b = nn.Conv2d(3, c, 1), nn.Conv2d(3, c + extra, 3, padding=1)

    def forward(self, x):
        s, y = self.a(x), self.b(x)
        return torch.cat([y[:, : self.c] + s, y[:, self.c :]], dim=1)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 12, 3, padding=1)
        self.mixed, self.pw = Mixed(), nn.Conv2d(12, 12, 1)
        self.split, self.dual = EqualSplit(), DualPath()
        self.head = nn.Conv2d(12 + 10, 5, 1)

    def forward(self, x):
        y = self.split(self.pw(F.relu(self.mixed(self.stem(x)))))
        return self.head(torch.cat([y, self.dual(x)], 1))


def test_cuts_by_attributes_prune_inside_parts_and_rewrite_the_attributes():
    model = Net()
    g = check(model, torch.randn(2, 3, 8, 8))
    assert not any(grp.frozen for grp in group_of(g, "stem") + group_of(g, "pw") + group_of(g, "dual.b"))
    assert {(m, a) for m, a, _, _ in g.size_attrs} == {("mixed", "splits"), ("split", "width"), ("dual", "c")}
    # the stem's channels fall in two parts (one per depthwise conv): each keeps at least one channel
    assert len(group_of(g, "stem")) == 2
    keep = {grp.id: torch.ones(grp.size, dtype=torch.bool) for grp in g.groups}
    stem = sorted(group_of(g, "stem"), key=lambda grp: grp.size)
    keep[stem[0].id][:2] = False  # 2 of the first split's 4
    (pw,) = group_of(g, "pw")
    keep[pw.id][0] = False  # equal parts: one channel of each of the three
    dual = [grp for grp in group_of(g, "dual.b") if any(m.module == "dual.a" for m in grp.members)][0]
    keep[dual.id][:1] = False  # one channel of the residual path
    small = pk.slim(model, g, keep)
    assert small.mixed.splits == [2, 8] and small.split.width == 3 and small.dual.c == 5
    x = torch.randn(2, 3, 8, 8)
    masked = pk.apply_masks(__import__("copy").deepcopy(model), g, keep)
    with torch.no_grad():
        torch.testing.assert_close(small(x), masked(x), rtol=1e-5, atol=1e-5)


class LiteralSplit(nn.Module):
    def __init__(self):
        super().__init__()
        self.splits = [4, 8]  # an attribute with the same value, but the code uses literals
        self.a, self.b, self.c = nn.Conv2d(3, 12, 1), nn.Conv2d(4, 2, 1), nn.Conv2d(8, 2, 1)

    def forward(self, x):
        p, q = torch.split(self.a(x), [4, 8], 1)
        return self.b(p) + self.c(q)


def test_literal_cuts_stay_frozen_even_when_an_attribute_has_the_same_value():
    g = check(LiteralSplit(), torch.randn(2, 3, 4, 4), seeds=(0,), min_changed=0)  # nothing prunable
    assert all(grp.frozen for grp in group_of(g, "a")) and not g.size_attrs


class CrossStage(nn.Module):
    """timm's CSP stages: the expanded channels split in two halves at ``self.expand_chs // 2``."""

    def __init__(self, c=12, literal=False):
        super().__init__()
        self.expand_chs, self.literal = c, literal
        self.a, self.b, self.c = nn.Conv2d(3, c, 1), nn.Conv2d(c // 2, 3, 1), nn.Conv2d(c // 2, 3, 1)

    def forward(self, x):
        xs, xb = self.a(x).split(self.expand_chs // 2, dim=1)
        return self.b(xs) + self.c(xb)


class HalfLiteral(CrossStage):
    def forward(self, x):  # the same cut as a literal: expand_chs is not what the code reads
        xs, xb = self.a(x).split(6, dim=1)
        return self.b(xs) + self.c(xb)


def test_split_at_a_fraction_of_an_attribute_rewrites_the_attribute():
    g = check(CrossStage(), torch.randn(2, 3, 4, 4))
    grp = group_of(g, "a")[0]
    assert not grp.frozen and grp.size == 6  # channel i of each half together
    assert [a[:3] for a in g.size_attrs] == [("", "expand_chs", None)]
    keep = {grp.id: torch.tensor([True, False, True, True, False, False])}
    small = pk.slim(CrossStage(), g, keep)
    assert small.expand_chs == 6 and small.a.out_channels == 6 and small.b.in_channels == 3
    g = check(HalfLiteral(), torch.randn(2, 3, 4, 4), seeds=(0,), min_changed=0)
    assert all(grp.frozen for grp in group_of(g, "a")) and not g.size_attrs


@pytest.fixture(scope="module")
def timm():
    return pytest.importorskip("timm")


def test_timm_mixed_conv(timm):
    from timm.layers import MixedConv2d

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.m, self.b = (
                nn.Conv2d(3, 16, 1),
                MixedConv2d(16, 16, [3, 5, 7], depthwise=True),
                nn.Conv2d(16, 4, 1),
            )

        def forward(self, x):
            return self.b(F.relu(self.m(self.a(x))))

    g = check(M(), torch.randn(2, 3, 8, 8))
    assert not any(grp.frozen for grp in group_of(g, "a")) and len(group_of(g, "a")) == 3
