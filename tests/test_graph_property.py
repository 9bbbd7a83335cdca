"""Property test of the channel graph: random CNNs built from the blocks the coupling rules must handle
(residual with/without projection, dense concat, depthwise-separable, SE gating, chunk split with two
branches re-concatenated, grouped conv, channel shuffle, flatten->Linear and pool->Linear heads), random
keep masks (~50% per group), and the oracle: ``slim(model)(x) == masked model(x)``.

    .venv/bin/python -m pytest tests/test_graph_property.py -q            # 40 derandomized examples (CI)
    .venv/bin/python -m pytest tests/test_graph_property.py -q -m slow    # 300 fresh random examples

A failing example prints its spec; ``build_model(spec)`` rebuilds that exact model (weights included).
"""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import prunekit as pk

# -- the blocks (channel counts are multiples of 4, so groups of 2 or 4 and chunk(2) always divide) --------


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c)


class Residual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, proj: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = _bn(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = _bn(cout)
        need = proj or cin != cout or stride != 1
        self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), _bn(cout)) if need else None

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        s = x if self.short is None else self.short(x)
        return torch.relu(out + s)


class Dense(nn.Module):
    """DenseNet-style: every layer's output is concatenated to its input."""

    def __init__(self, cin: int, growth: int, layers: int):
        super().__init__()
        self.layers = nn.ModuleList()
        for i in range(layers):
            c = cin + i * growth
            self.layers.append(nn.Sequential(_bn(c), nn.ReLU(), nn.Conv2d(c, growth, 3, 1, 1)))

    def forward(self, x):
        for layer in self.layers:
            x = torch.cat([x, layer(x)], 1)
        return x


class DepthwiseSeparable(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.dw = nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False)
        self.bn1 = _bn(cin)
        self.pw = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn2 = _bn(cout)

    def forward(self, x):
        x = nn.functional.relu6(self.bn1(self.dw(x)))
        return torch.relu(self.bn2(self.pw(x)))


class SE(nn.Module):
    """x * sigmoid(fc(pool(x))), with the fc as 1x1 convs or as Linear layers (flatten, then view back)."""

    def __init__(self, c: int, squeeze: int, linear: bool):
        super().__init__()
        self.linear = linear
        self.pool = nn.AdaptiveAvgPool2d(1)
        if linear:
            self.fc1, self.fc2 = nn.Linear(c, squeeze), nn.Linear(squeeze, c)
        else:
            self.fc1, self.fc2 = nn.Conv2d(c, squeeze, 1), nn.Conv2d(squeeze, c, 1)

    def forward(self, x):
        s = self.pool(x)
        if self.linear:
            s = torch.flatten(s, 1)
        s = torch.sigmoid(self.fc2(torch.relu(self.fc1(s))))
        if self.linear:
            s = s.view(x.size(0), -1, 1, 1)
        return x * s


class SplitBranches(nn.Module):
    """ShuffleNetV2-style: chunk the channels in two, a branch on each half (identity or conv), concat."""

    def __init__(self, c: int, out_a: int | None, out_b: int):
        super().__init__()
        half = c // 2
        self.a = None if out_a is None else nn.Sequential(nn.Conv2d(half, out_a, 1), _bn(out_a), nn.ReLU())
        self.b = nn.Sequential(
            nn.Conv2d(half, out_b, 1, bias=False), _bn(out_b), nn.ReLU(),
            nn.Conv2d(out_b, out_b, 3, 1, 1, groups=out_b, bias=False), _bn(out_b),
        )  # fmt: skip

    def forward(self, x):
        a, b = x.chunk(2, dim=1)
        if self.a is not None:
            a = self.a(a)
        return torch.cat((a, self.b(b)), dim=1)


class Grouped(nn.Module):
    def __init__(self, cin: int, cout: int, groups: int, stride: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride, 1, groups=groups, bias=False)
        self.bn = _bn(cout)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


class Shuffle(nn.Module):
    """torchvision's channel_shuffle: view(b, g, c // g, h, w) -> transpose -> view(b, -1, h, w)."""

    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x):
        b, c, h, w = x.size()
        x = x.view(b, self.groups, c // self.groups, h, w)
        x = torch.transpose(x, 1, 2).contiguous()
        return x.view(b, -1, h, w)


class Net(nn.Module):
    def __init__(self, stem: nn.Module, blocks: list[nn.Module], head: nn.Module, flatten_head: bool):
        super().__init__()
        self.stem = stem
        self.blocks = nn.ModuleList(blocks)
        self.pool = None if flatten_head else nn.AdaptiveAvgPool2d(1)
        self.head = head

    def forward(self, x):
        x = self.stem(x)
        for b in self.blocks:
            x = b(x)
        if self.pool is not None:
            x = self.pool(x)
        return self.head(torch.flatten(x, 1))


def build_model(spec: dict) -> nn.Module:
    """The model a spec describes, with reproducible random weights and BatchNorm statistics."""
    torch.manual_seed(spec["seed"])
    c, h = spec["width"], spec["size"]
    stem = nn.Sequential(nn.Conv2d(3, c, 3, 1, 1, bias=False), _bn(c), nn.ReLU())
    blocks: list[nn.Module] = []
    for kind, *p in spec["blocks"]:
        if kind == "res":
            cout, stride, proj = p
            blocks.append(Residual(c, cout, stride, proj))
            c, h = cout, (h + 1) // stride if stride > 1 else h
        elif kind == "dense":
            growth, layers = p
            blocks.append(Dense(c, growth, layers))
            c += growth * layers
        elif kind == "dws":
            cout, stride = p
            blocks.append(DepthwiseSeparable(c, cout, stride))
            c, h = cout, (h + 1) // stride if stride > 1 else h
        elif kind == "se":
            squeeze, linear = p
            blocks.append(SE(c, squeeze, linear))
        elif kind == "split":
            out_a, out_b = p
            blocks.append(SplitBranches(c, out_a, out_b))
            c = (c // 2 if out_a is None else out_a) + out_b
        elif kind == "group":
            cout, groups, stride = p
            blocks.append(Grouped(c, cout, groups, stride))
            c, h = cout, (h + 1) // stride if stride > 1 else h
        elif kind == "shuffle":
            blocks.append(Shuffle(p[0]))
        else:  # pragma: no cover
            raise ValueError(kind)
    flatten_head = spec["head"] == "flatten"
    feats = c * h * h if flatten_head else c
    if spec["head"] == "mlp":
        head: nn.Module = nn.Sequential(nn.Linear(feats, 16), nn.ReLU(), nn.Linear(16, 5))
    else:
        head = nn.Linear(feats, 5)
    model = Net(stem, blocks, head, flatten_head)
    with torch.no_grad():  # non-trivial eval-mode BatchNorm, so pruned channels' shifts matter
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


# -- the strategy ------------------------------------------------------------------------------------------

WIDTHS = st.sampled_from([4, 8, 12, 16])


@st.composite
def block_spec(draw, c: int, h: int) -> tuple:
    """One block that fits ``c`` channels of size ``h`` (the downsampling ones only while h >= 8)."""
    stride = st.sampled_from([1, 2]) if h >= 8 else st.just(1)
    shuffle = ["shuffle"] if c % 2 == 0 else []  # a shuffle needs a group count that divides c
    kind = draw(st.sampled_from(["res", "dense", "dws", "se", "split", "group", *shuffle]))
    if kind == "res":
        return ("res", draw(WIDTHS), draw(stride), draw(st.booleans()))
    if kind == "dense":
        return ("dense", draw(st.sampled_from([4, 8])), draw(st.integers(1, 2)))
    if kind == "dws":
        return ("dws", draw(WIDTHS), draw(stride))
    if kind == "se":
        return ("se", draw(st.sampled_from([2, 4])), draw(st.booleans()))
    if kind == "split":
        return ("split", draw(st.sampled_from([None, 4, 8])), draw(st.sampled_from([2, 4, 8])))
    if kind == "group":
        g = draw(st.sampled_from([2, 4]))
        return ("group", draw(WIDTHS.filter(lambda w: w % g == 0)), g, draw(stride))
    return ("shuffle", draw(st.sampled_from([g for g in (2, 4) if c % g == 0])))


def _after(c: int, h: int, blk: tuple) -> tuple[int, int]:
    kind, *p = blk
    if kind in ("res", "dws"):
        return p[0], (h + 1) // p[1] if p[1] > 1 else h
    if kind == "group":
        return p[0], (h + 1) // p[2] if p[2] > 1 else h
    if kind == "dense":
        return c + p[0] * p[1], h
    if kind == "split":
        return (c // 2 if p[0] is None else p[0]) + p[1], h
    return c, h


@st.composite
def cnn_specs(draw) -> dict:
    size = draw(st.sampled_from([8, 12, 16]))
    width = draw(WIDTHS)
    c, h, blocks = width, size, []
    for _ in range(draw(st.integers(1, 5))):
        blk = draw(block_spec(c, h))
        if blk[0] == "group" and c % blk[2]:  # the input must split into the groups too
            continue
        if blk[0] == "split" and c % 2:
            continue
        blocks.append(blk)
        c, h = _after(c, h, blk)
    head = draw(st.sampled_from(["flatten", "pool", "mlp"]))
    return {"size": size, "width": width, "blocks": blocks, "head": head, "seed": draw(st.integers(0, 2**16))}


# -- the check ---------------------------------------------------------------------------------------------


def check(spec: dict, mask_seed: int) -> float:
    """Assert the oracle on one random model; returns how much the masks changed the output."""
    model = build_model(spec)
    x = torch.randn(2, 3, spec["size"], spec["size"], generator=torch.Generator().manual_seed(mask_seed))
    g = pk.build_graph(model, x)
    gen = torch.Generator().manual_seed(mask_seed)
    keep = {}
    for grp in g.groups:
        mask = torch.rand(grp.size, generator=gen) < 0.5
        if not mask.any():
            mask[torch.randint(grp.size, (1,), generator=gen)] = True
        keep[grp.id] = mask
    masked = pk.apply_masks(copy.deepcopy(model), g, keep).eval()
    small = pk.slim(model, g, keep).eval()
    with torch.no_grad():
        dense_out, masked_out, small_out = model(x), masked(x), small(x)
    assert small_out.shape == dense_out.shape, f"slimmed output shape {tuple(small_out.shape)}"
    denom = masked_out.abs().max().clamp_min(1e-3)
    err = float((small_out - masked_out).abs().max() / denom)
    assert err <= 1e-4, f"slim != masked: relative max error {err:.2e}\n{g.summary(members=True)}"
    macs, macs_kept = g.macs(), g.macs(keep)
    assert macs_kept <= macs
    if any(not bool(m.all()) for m in keep.values()):
        assert macs_kept < macs, "channels were pruned but the MACs did not drop"
    return float((masked_out - dense_out).abs().max() / dense_out.abs().max().clamp_min(1e-3))


def _run(max_examples: int, derandomize: bool) -> None:
    changed: list[float] = []

    @settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=derandomize,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(spec=cnn_specs(), mask_seed=st.integers(0, 2**16))
    def prop(spec: dict, mask_seed: int) -> None:
        changed.append(check(spec, mask_seed))

    prop()
    # the oracle is only meaningful if pruning changes what the model computes
    moved = sum(c > 1e-3 for c in changed)
    assert moved >= 0.8 * len(changed), f"masks changed the output in only {moved}/{len(changed)} examples"


def test_random_cnns_slim_matches_masked():
    _run(40, derandomize=True)


@pytest.mark.slow
def test_random_cnns_slim_matches_masked_many():
    _run(300, derandomize=False)


def test_known_tricky_models():
    """Hand-picked specs covering every block kind and both head kinds at least once."""
    specs = [
        {"size": 16, "width": 8, "blocks": [("split", None, 4), ("shuffle", 2), ("split", 4, 4), ("shuffle", 4)],
         "head": "flatten", "seed": 1},
        {"size": 12, "width": 8, "blocks": [("group", 8, 4, 2), ("se", 2, True), ("res", 8, 1, False),
                                            ("dense", 4, 2), ("dws", 12, 2)], "head": "mlp", "seed": 2},
        {"size": 8, "width": 4, "blocks": [("res", 8, 2, True), ("group", 16, 2, 1), ("shuffle", 4),
                                           ("se", 4, False)], "head": "pool", "seed": 3},
    ]  # fmt: skip
    for i, spec in enumerate(specs):
        assert check(spec, i) > 1e-3
