"""The coupling rules on small hand-made models: each rule's groups and members, and the equivalence of
the slimmed and masked models."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import prunekit as pk
from prunekit.testing import check_equivalence


def cbr(i, o, **kw):
    return nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False, **kw), nn.BatchNorm2d(o), nn.ReLU())


def members(g, gid, role=None):
    return {(m.module, m.param, m.dim) for m in g[gid].members if role is None or m.role == role}


def group_of(g, module, param="weight", dim=0):
    for grp in g.groups + g.frozen:
        if any((m.module, m.param, m.dim) == (module, param, dim) for m in grp.members):
            return grp
    raise AssertionError(f"{module}.{param} dim {dim} is in no group")


def assert_equivalent(model, x, ratio=0.5, seeds=(0, 1, 2)):
    for seed in seeds:
        eq = check_equivalence(model, x, ratio=ratio, seed=seed)
        assert eq.rel_error <= 1e-5, eq.rel_error
        assert eq.shape_ok
    return eq.graph


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = cbr(3, 8)
        self.a, self.b = cbr(8, 6), nn.Conv2d(6, 8, 3, padding=1)
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.b(self.a(x))
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


def test_residual_add_couples_both_branches():
    g = assert_equivalent(Residual(), torch.randn(2, 3, 8, 8))
    grp = group_of(g, "stem.0")
    assert grp is group_of(g, "b") and grp.size == 8 and not grp.frozen
    assert ("a.0", "weight", 1) in members(g, grp.id, "in") and ("head", "weight", 1) in members(g, grp.id, "in")
    assert ("stem.1", "running_var", 0) in members(g, grp.id, "norm")
    assert group_of(g, "a.0").size == 6
    assert group_of(g, "head").frozen and "model output" in group_of(g, "head").reasons


class Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = cbr(3, 4), cbr(3, 6)
        self.bn = nn.BatchNorm2d(10)
        self.c = nn.Conv2d(10, 5, 1)

    def forward(self, x):
        return self.c(self.bn(torch.cat([self.a(x), self.b(x)], dim=1)))


def test_concat_offsets():
    g = assert_equivalent(Concat(), torch.randn(2, 3, 8, 8))
    ga, gb = group_of(g, "a.0"), group_of(g, "b.0")
    assert ga is not gb
    (ma,) = [m for m in ga.members if m.module == "c" and m.dim == 1]
    (mb,) = [m for m in gb.members if m.module == "c" and m.dim == 1]
    assert ma.slice == slice(0, 4) and mb.positions.tolist() == list(range(4, 10))
    bn = [m.positions.tolist() for m in gb.members if m.module == "bn" and m.param == "weight"]
    assert bn == [list(range(4, 10))]


class DepthwiseSE(nn.Module):
    """Depthwise-separable block with squeeze-and-excitation gating."""

    def __init__(self):
        super().__init__()
        self.pw = cbr(3, 8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.fc1, self.fc2 = nn.Conv2d(8, 4, 1), nn.Conv2d(4, 8, 1)
        self.out = nn.Conv2d(8, 6, 1)

    def forward(self, x):
        x = self.dw(self.pw(x))
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean((2, 3), keepdim=True)))))
        return self.out(x * s)


def test_depthwise_and_se_gating():
    g = assert_equivalent(DepthwiseSE(), torch.randn(2, 3, 8, 8))
    grp = group_of(g, "pw.0")
    assert ("dw", "weight", 0) in members(g, grp.id, "dw")
    assert ("fc2", "weight", 0) in members(g, grp.id, "out")  # the gate is coupled to what it gates
    assert ("fc1", "weight", 1) in members(g, grp.id, "in")
    assert group_of(g, "fc1").size == 4 and not group_of(g, "fc1").frozen
    small = pk.slim(DepthwiseSE(), g, {grp.id: torch.tensor([1, 0, 1, 0, 1, 1, 0, 1], dtype=torch.bool)})
    assert small.dw.groups == small.dw.in_channels == small.dw.out_channels == 5


class Grouped(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = cbr(3, 8)
        self.g = nn.Conv2d(8, 12, 3, padding=1, groups=4)
        self.c = nn.Conv2d(12, 5, 1)

    def forward(self, x):
        return self.c(self.g(self.a(x)))


def test_grouped_conv_prunes_whole_groups():
    model = Grouped()
    g = assert_equivalent(model, torch.randn(2, 3, 8, 8))
    grp = group_of(g, "a.0")
    assert grp is group_of(g, "g") and grp.size == 4  # one unit per conv group
    (m,) = [m for m in grp.members if m.module == "g" and m.param == "weight"]
    assert m.channels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    small = pk.slim(model, g, {grp.id: torch.tensor([True, False, True, False])})
    assert (small.g.groups, small.g.in_channels, small.g.out_channels) == (2, 4, 6)


class FlattenHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = cbr(3, 4)
        self.fc = nn.Linear(4 * 4 * 4, 7)

    def forward(self, x):
        return self.fc(torch.flatten(F.max_pool2d(self.a(x), 2), 1))


def test_flatten_linear_owns_hw_features_per_channel():
    g = assert_equivalent(FlattenHead(), torch.randn(2, 3, 8, 8))
    (m,) = [m for m in group_of(g, "a.0").members if m.module == "fc"]
    assert m.dim == 1 and len(m.positions) == 64
    assert m.channels.tolist() == [c for c in range(4) for _ in range(16)]


class Split(nn.Module):
    """ShuffleNet-style: chunk, branch, concat, channel shuffle."""

    def __init__(self):
        super().__init__()
        self.a = cbr(3, 8)
        self.b = cbr(4, 4)
        self.c = nn.Conv2d(8, 5, 1)

    def forward(self, x):
        x = self.a(x)
        x1, x2 = x.chunk(2, dim=1)
        x = torch.cat([x1, self.b(x2)], 1)
        n, c, h, w = x.size()
        x = x.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, c, h, w)
        return self.c(x)


def test_chunk_and_channel_shuffle_stay_consistent():
    g = assert_equivalent(Split(), torch.randn(2, 3, 8, 8), seeds=range(6))
    assert group_of(g, "a.0").size == 4  # chunk couples channel i of both halves
    assert not group_of(g, "b.0").frozen


class ShuffleOnePerGroup(nn.Module):
    """A channel shuffle with as many groups as channels: view(b, g, c // g, ...) with c // g == 1."""

    def __init__(self, groups=4):
        super().__init__()
        self.a, self.groups = cbr(3, 4), groups
        self.c = nn.Conv2d(4, 5, 1)

    def forward(self, x):
        x = self.a(x)
        b, c, h, w = x.size()
        x = x.view(b, self.groups, c // self.groups, h, w).transpose(1, 2).contiguous().view(b, -1, h, w)
        return self.c(x)


class LiteralView(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = cbr(3, 4)
        self.fc = nn.Linear(4 * 64, 5)

    def forward(self, x):
        return self.fc(self.a(x).view(x.shape[0], 4, 64).flatten(1))


def test_view_to_a_literal_channel_count_is_frozen():
    # after slimming a literal size in view() would no longer fit the channels (found by the random-CNN test)
    g = assert_equivalent(LiteralView(), torch.randn(2, 3, 8, 8))
    grp = group_of(g, "a.0")
    assert grp.frozen and "fixed size (4)" in grp.reasons[0], grp.reasons


def test_view_to_a_channel_count_held_by_an_attribute_rewrites_it():
    """view(b, self.groups, c // self.groups, ...) with one channel per group: the channel count is the
    module's attribute, read by its forward; slimming writes the kept count into it (as torchvision ViT's
    reshape(n, self.hidden_dim, ...)), and the slimmed model matches the masked one."""
    model = ShuffleOnePerGroup()
    g = assert_equivalent(model, torch.randn(2, 3, 8, 8))
    grp = group_of(g, "a.0")
    assert not grp.frozen
    assert [a[:3] for a in g.size_attrs] == [("", "groups", None)]
    keep = {grp.id: torch.tensor([True, False, True, False])}
    assert pk.slim(model, g, {**g.full_keep(), **keep}).groups == 2


class GroupedOverConcat(nn.Module):
    """A grouped conv reading a concat whose parts are its groups: each unit is one layer's whole output."""

    def __init__(self):
        super().__init__()
        self.a, self.b = cbr(3, 4), cbr(4, 4)
        self.g = nn.Conv2d(8, 4, 3, padding=1, groups=2)
        self.c = nn.Conv2d(4, 5, 1)

    def forward(self, x):
        x = self.a(x)
        return self.c(self.g(torch.cat([x, self.b(x)], 1)))


def test_units_that_could_empty_a_layer_split_the_group_into_parts():
    # keeping only the second unit would leave conv a no output channel (found by the random-CNN test): the
    # group is split into parts that each layer holds whole, and every part keeps a channel
    g = assert_equivalent(GroupedOverConcat(), torch.randn(2, 3, 8, 8))
    a, b = group_of(g, "a.0"), group_of(g, "b.0")
    assert a is not b and not a.frozen and not b.frozen and a.size == b.size == 1  # one unit each
    assert b.id == "a.0#part1" and a.producers == ["a.0", "g"] and b.producers == ["b.0", "g"]


class ChunkOverDense(nn.Module):
    """chunk(2) over a dense concat: channel i of one half is pruned with channel i of the other, so the
    layers' channels fall in some of the group's channels only."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = cbr(3, 4), cbr(4, 2), cbr(6, 2)
        self.head = nn.Conv2d(4, 5, 1)

    def forward(self, x):
        x = self.a(x)
        x = torch.cat([x, self.b(x)], 1)
        x = torch.cat([x, self.c(x)], 1)  # 4 + 2 + 2 channels
        x1, x2 = x.chunk(2, dim=1)
        return self.head(x1 + x2)


def test_chunk_over_dense_concat_is_split_into_parts_no_layer_can_lose():
    g = assert_equivalent(ChunkOverDense(), torch.randn(2, 3, 8, 8))
    for layer in ("a.0", "b.0", "c.0"):
        assert not group_of(g, layer).frozen
    # every layer holds whole parts: a keep mask that keeps one channel per group never empties a layer
    for grp in g.groups:
        for m in grp.members:
            assert len(set(m.channels.tolist())) in (0, grp.size), (grp.id, m.describe())


class FixedSlice(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = cbr(3, 8)
        self.c = nn.Conv2d(3, 5, 1)

    def forward(self, x):
        return self.c(self.a(x)[:, :3])


def test_fixed_channel_slice_is_frozen_with_reason():
    # a literal bound in the code: slimming cannot move it (tests/test_graph_splits.py has the attribute forms)
    g = assert_equivalent(FixedSlice(), torch.randn(2, 3, 8, 8))
    grp = group_of(g, "a.0")
    assert grp.frozen and "fixed part of the channel dim" in grp.reasons[0] and "getitem" in grp.reasons[0]


class LayerScale(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = cbr(3, 8)
        self.gamma = nn.Parameter(torch.rand(8, 1, 1))
        self.norm = nn.LayerNorm([8, 8])  # over H, W: channel-wise, passes channels through
        self.c = nn.Conv2d(8, 5, 1)

    def forward(self, x):
        return self.c(self.norm(self.a(x) * self.gamma))


def test_parameter_on_channel_path_is_a_member():
    g = assert_equivalent(LayerScale(), torch.randn(2, 3, 8, 8))
    assert ("", "gamma", 0) in members(g, group_of(g, "a.0").id, "param")


class ChannelLN(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 1)
        self.ln = nn.LayerNorm(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(self.ln(self.a(x).permute(0, 2, 3, 1)))


def test_layernorm_over_channels_is_pruned_exactly():
    # the masked model normalizes over the kept channels only (tests/test_graph_norms.py has the rest)
    g = assert_equivalent(ChannelLN(), torch.randn(2, 3, 4, 4))
    grp = group_of(g, "a")
    assert not grp.frozen and ("ln", "weight", 0) in members(g, grp.id, "norm")
    assert [(s.module, s.kind) for s in g.stats] == [("ln", "layer_norm")]


@torch.fx.wrap
def mystery(x):
    return x.flip(1)


class Unknown(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.c = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.c(mystery(self.a(x)))


def test_unknown_op_freezes_with_node_and_op():
    g = assert_equivalent(Unknown(), torch.randn(1, 3, 4, 4))
    assert group_of(g, "a").frozen and "mystery" in group_of(g, "a").reasons[0]
    assert group_of(g, "c", "weight", 1).frozen


class DataDependent(nn.Module):
    def forward(self, x):
        if x.sum() > 0:
            return x * 2
        return x


class UsesDataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.dd, self.c, self.d = nn.Conv2d(3, 8, 1), DataDependent(), nn.Conv2d(8, 4, 1), nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.d(self.c(self.dd(self.a(x))))


class RootDataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 1)

    def forward(self, x):
        x = self.a(x)
        return x * 2 if x.sum() > 0 else x


def test_untraceable_submodule_is_kept_whole_and_the_rest_prunes():
    model = UsesDataDependent()
    g = pk.build_graph(model, torch.randn(1, 3, 4, 4))
    assert list(g.opaque) == ["dd"] and "DataDependent" in g.opaque["dd"] and "test_graph_rules.py" in g.opaque["dd"]
    assert "opaque" in g.summary() and "dd" in g.summary()
    assert group_of(g, "a").frozen and "dd" in group_of(g, "a").reasons[0]
    assert not group_of(g, "c").frozen
    assert_equivalent(model, torch.randn(2, 3, 4, 4))
    # the top-level forward itself must trace: the error says what to do instead of a useless leaf_modules
    with pytest.raises(pk.GraphBuildError) as e:
        pk.build_graph(RootDataDependent(), torch.randn(1, 3, 4, 4))
    msg = str(e.value)
    assert "RootDataDependent" in msg and "submodule" in msg and "Original traceback" not in msg
    for leaf in ([DataDependent], ["dd"]):
        g = pk.build_graph(model, torch.randn(1, 3, 4, 4), leaf_modules=leaf)
        assert group_of(g, "a").frozen and "dd" in group_of(g, "a").reasons[0]
        assert not group_of(g, "c").frozen
    with pytest.raises(pk.GraphBuildError, match="not submodules"):
        pk.build_graph(model, torch.randn(1, 3, 4, 4), leaf_modules=["nope"])


def test_bad_inputs_give_clear_errors():
    with pytest.raises(TypeError, match="torch.nn.Module"):
        pk.build_graph(Residual, torch.randn(1, 3, 8, 8))
    with pytest.raises(TypeError, match="example_inputs"):
        pk.build_graph(Residual(), None)
    with pytest.raises(pk.GraphBuildError, match="example_inputs.*shape") as e:
        pk.build_graph(Residual(), torch.randn(1, 5, 8, 8))
    assert "stem" in str(e.value)


def test_keep_validation_errors():
    model = Residual()
    g = pk.build_graph(model, torch.randn(1, 3, 8, 8))
    gid = group_of(g, "stem.0").id
    with pytest.raises(KeyError, match="did you mean 'stem.0'"):
        pk.slim(model, g, {"stem0": torch.ones(8, dtype=torch.bool)})
    with pytest.raises(ValueError, match="has shape \\(5,\\).*8 channels"):
        pk.apply_masks(model, g, {gid: torch.ones(5, dtype=torch.bool)})
    with pytest.raises(ValueError, match="keeps no channel"):
        pk.slim(model, g, {gid: torch.zeros(8, dtype=torch.bool)})
    with pytest.raises(TypeError, match="bool mask"):
        pk.slim(model, g, {gid: torch.rand(8)})
    with pytest.raises(ValueError, match="frozen.*model output"):
        pk.slim(model, g, {"head": torch.zeros(5, dtype=torch.bool).index_fill_(0, torch.tensor([0]), True)})
    # 0/1 integer masks and lists are accepted
    small = pk.slim(model, g, {gid: [1, 0] * 4})
    assert small.stem[0].out_channels == 4


def test_graph_applies_to_copies_and_wrappers_and_slim_leaves_input_alone():
    model = Residual().eval()
    x = torch.randn(2, 3, 8, 8)
    g = pk.build_graph(model, x)
    keep = {grp.id: torch.arange(grp.size) % 2 == 0 for grp in g.groups}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    twin = Residual()
    twin.load_state_dict(model.state_dict())
    outs = [pk.slim(m, g, keep).eval()(x) for m in (model, copy.deepcopy(model), twin, nn.DataParallel(model))]
    for o in outs[1:]:
        torch.testing.assert_close(o, outs[0])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(KeyError, match="the model the graph was built on"):
        pk.apply_masks(nn.Sequential(nn.Conv2d(3, 8, 1)), g, keep)


def test_json_and_dot_export_round_trip(tmp_path):
    model = Concat()
    g = pk.build_graph(model, torch.randn(1, 3, 8, 8))
    g.to_json(str(tmp_path / "g.json"))
    g2 = pk.ChannelGraph.from_dict(__import__("json").loads((tmp_path / "g.json").read_text()))
    assert [(x.id, x.size, len(x.members)) for x in g2.groups] == [(x.id, x.size, len(x.members)) for x in g.groups]
    assert g2.macs() == g.macs()
    keep = {grp.id: torch.arange(grp.size) < 2 for grp in g.groups}
    ones = torch.ones(1, 3, 8, 8)
    torch.testing.assert_close(pk.slim(model, g2, keep)(ones), pk.slim(model, g, keep)(ones))
    dot = g.to_dot()
    assert dot.startswith("graph") and '"a.0"' in dot and "module:c" in dot
    assert "prunable" in repr(g.groups[0]) and "Concat" in g.summary(members=True)


def test_macs_match_counted_macs():
    model = Residual()
    x = torch.randn(1, 3, 8, 8)
    g = pk.build_graph(model, x)
    keep = {grp.id: torch.arange(grp.size) % 3 != 0 for grp in g.groups}
    small = pk.slim(model, g, keep)
    # graph MACs cover conv/linear; the ATen count adds nothing else for this model
    assert g.macs() == pk.count_macs(model, x)
    assert g.macs(keep) == pk.count_macs(small, x)
    assert pk.count_params(small) < pk.count_params(model)
