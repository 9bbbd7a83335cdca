"""Transformer residual streams: nn.MultiheadAttention and torchvision's Swin window attention read the stream
through their input projections and write it through their output projection; the heads stay whole. The
stream is prunable exactly: slim(model)(x) == masked(x), with the attention layers switched to their pruned
forms (graphs/layers.py)."""

import copy

import pytest
import torch
from prunekit.graphs.layers import (
    PrunedMultiheadAttention,
    PrunedShiftedWindowAttention,
    PrunedShiftedWindowAttentionV2,
)
from torch import nn
from torchvision.models.swin_transformer import (
    PatchMergingV2,
    ShiftedWindowAttention,
    SwinTransformer,
    SwinTransformerBlockV2,
    shifted_window_attention,
)
from torchvision.models.vision_transformer import VisionTransformer

import prunekit as pk
from prunekit.testing import check_equivalence, randomize_parameters

TOL = 1e-4
torch.fx.wrap("shifted_window_attention")  # a leaf when called from this file too, as from torchvision's


def small_vit(**kw):
    cfg = dict(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=10)
    cfg.update(kw)
    return VisionTransformer(**cfg).eval()


class Block(nn.Module):
    """A pre-norm transformer block around nn.MultiheadAttention, called the ways users call it."""

    def __init__(self, dim=16, heads=4, batch_first=True, need_weights=True, masks=False, **mha):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=batch_first, **mha)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.need_weights, self.masks = need_weights, masks
        self.register_buffer("mask", torch.triu(torch.ones(16, 16, dtype=torch.bool), 1))  # causal, 16 tokens

    def forward(self, x):
        h = self.norm(x)
        kw = {"attn_mask": self.mask} if self.masks else {}
        a, _ = self.attn(h, h, h, need_weights=self.need_weights, **kw)
        x = x + a
        return x + self.mlp(x)


class Net(nn.Module):
    def __init__(self, batch_first=True, **kw):
        super().__init__()
        self.embed = nn.Conv2d(3, 16, 4, 4)
        self.batch_first = batch_first
        self.blocks = nn.Sequential(Block(batch_first=batch_first, **kw), Block(batch_first=batch_first, **kw))
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2)  # B, L, C
        if not self.batch_first:
            x = x.transpose(0, 1)
        x = self.blocks(x)
        return self.head(x.mean(1 if self.batch_first else 0))


def stream_group(g, module):
    grp = [grp for grp in g.groups if any(m.module == module and m.role == "out" for m in grp.members)]
    assert grp, f"{module}'s channels are not prunable: {g.summary()}"
    return grp[0]


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"batch_first": False},
        {"need_weights": False},
        {"masks": True},
        {"masks": True, "need_weights": False},
        {"bias": False},
        {"add_bias_kv": True},
        {"add_zero_attn": True},
    ],
    ids=["default", "seq_first", "sdpa", "mask", "mask_sdpa", "no_bias", "bias_kv", "zero_attn"],
)
def test_multihead_attention_stream_prunes_exactly(kw):
    torch.manual_seed(0)
    model = Net(**kw).eval()
    x = torch.randn(2, 3, 16, 16)
    eq = check_equivalence(model, x, ratio=0.5, seed=1)
    assert eq.rel_error <= TOL and eq.changed >= 100 * TOL
    grp = stream_group(eq.graph, "embed")
    kinds = {(m.module, m.param, m.dim) for m in grp.members}
    assert ("blocks.0.attn", "in_proj_weight" if "kdim" not in kw else "q_proj_weight", 1) in kinds
    assert ("blocks.1.attn.out_proj", "weight", 0) in kinds
    assert isinstance(eq.slimmed.blocks[0].attn, PrunedMultiheadAttention)
    assert eq.slimmed.blocks[0].attn.in_proj_weight.shape[1] == int(eq.keep[grp.id].sum())
    # the heads are whole: the attention's own width is unchanged
    assert eq.slimmed.blocks[0].attn.out_proj.weight.shape[1] == 16


def test_pruned_attention_equals_torch_when_nothing_is_pruned():
    """The pruned forward is F.multi_head_attention_forward's computation: on an unpruned layer the two agree,
    in training mode with dropout off and in eval mode, with and without weights and masks."""
    torch.manual_seed(0)
    for batch_first in (True, False):
        ref = nn.MultiheadAttention(16, 4, batch_first=batch_first, add_bias_kv=True)
        mine = copy.deepcopy(ref)
        mine.__class__ = PrunedMultiheadAttention
        q, k = torch.randn(3, 5, 16), torch.randn(3, 7, 16)
        if not batch_first:
            q, k = q.transpose(0, 1), k.transpose(0, 1)
        pad = torch.zeros(3, 7, dtype=torch.bool)
        pad[:, -2:] = True
        for need in (True, False):
            a = ref(q, k, k, key_padding_mask=pad, need_weights=need)
            b = mine(q, k, k, key_padding_mask=pad, need_weights=need)
            assert torch.allclose(a[0], b[0], atol=1e-6)
            if need:
                assert torch.allclose(a[1], b[1], atol=1e-6)


def test_cross_attention_with_own_key_value_widths():
    """kdim/vdim: query, key and value have projections of their own, each coupled to its own input."""

    class Cross(nn.Module):
        def __init__(self):
            super().__init__()
            self.q, self.kv = nn.Linear(8, 16), nn.Linear(8, 12)
            self.attn = nn.MultiheadAttention(16, 2, kdim=12, vdim=12, batch_first=True)
            self.head = nn.Linear(16, 4)

        def forward(self, a, b):
            kv = self.kv(b)
            out, _ = self.attn(self.q(a), kv, kv)
            return self.head(out)

    torch.manual_seed(0)
    model = Cross().eval()
    a, b = torch.randn(2, 5, 8), torch.randn(2, 6, 8)
    eq = check_equivalence(model, (a, b), ratio=0.5, seed=0)
    assert eq.rel_error <= TOL and eq.changed >= 100 * TOL
    kv = stream_group(eq.graph, "kv")
    kinds = {(m.module, m.param, m.dim) for m in kv.members}
    assert {("attn", "k_proj_weight", 1), ("attn", "v_proj_weight", 1)} <= kinds
    q = stream_group(eq.graph, "q")
    assert ("attn", "q_proj_weight", 1) in {(m.module, m.param, m.dim) for m in q.members}


def test_vit_embedding_dim_prunes_exactly_and_counts_macs():
    torch.manual_seed(0)
    model = small_vit()
    x = torch.randn(2, 3, 32, 32)
    eq = check_equivalence(model, x, ratio=0.5, seed=2)
    assert eq.rel_error <= TOL and eq.changed >= 100 * TOL
    g = eq.graph
    grp = stream_group(g, "conv_proj")
    params = {(m.module, m.param) for m in grp.members}
    # the token, position embedding and every norm on the stream are members
    assert {("", "class_token"), ("encoder", "pos_embedding"), ("encoder.ln", "weight")} <= params
    kept = int(eq.keep[grp.id].sum())
    assert eq.slimmed.hidden_dim == kept  # the attribute _process_input reshapes with
    assert [f.id for f in g.frozen] == ["input x", "heads.head"]
    # the graph's MACs are the conv/linear MACs the flop counter sees; the rest (attention products, if the
    # counter sees them) does not depend on the stream's width, so it is the same before and after slimming
    attn = 2 * 2 * (17 * 17 * 16)  # per layer: q @ k^T and attn @ v over 17 tokens, 16 head channels
    rest = pk.count_macs(model, x[:1]) - g.macs()
    assert rest in (0, attn)
    assert pk.count_macs(eq.slimmed, x[:1]) - g.macs(eq.keep) == rest


def test_vit_saved_and_loaded_plan_rebuilds_the_pruned_attention(tmp_path):
    torch.manual_seed(0)
    model = randomize_parameters(small_vit(), seed=0)
    x = torch.randn(2, 3, 32, 32)
    g = pk.build_graph(model, x)
    keep = {grp.id: torch.rand(grp.size) > 0.4 for grp in g.groups}
    small = pk.slim(model, g, keep)
    path = tmp_path / "vit.pt"
    pk.save_pruned(str(path), small, g, keep)
    loaded = pk.load_pruned(str(path), model=small_vit())
    with torch.no_grad():
        assert torch.allclose(loaded(x), small.eval()(x), atol=1e-5)
    assert isinstance(loaded.encoder.layers[0].self_attention, PrunedMultiheadAttention)


def small_swin(v2=False):
    kw = {"block": SwinTransformerBlockV2, "downsample_layer": PatchMergingV2} if v2 else {}
    model = SwinTransformer(
        patch_size=[2, 2], embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=[4, 4], num_classes=10, **kw
    ).eval()
    with torch.no_grad():  # init weights (std 0.02) leave attention near uniform: a wrong scale would not show
        for name, p in model.named_parameters():
            if name.endswith(("qkv.weight", "proj.weight")):
                p.normal_(0, 0.5)
    return model


@pytest.mark.parametrize("size,v2", [(16, False), (20, False), (20, True)], ids=["whole_windows", "padded", "v2"])
def test_swin_stream_prunes_exactly(size, v2):
    """Shifted windows (the second block of each stage), inputs padded to whole windows, and Swin V2 (cosine
    attention with a logit scale, no key bias)."""
    torch.manual_seed(0)
    model = small_swin(v2)
    x = torch.randn(2, 3, size, size)
    eq = check_equivalence(model, x, ratio=0.5, seed=3)
    assert eq.rel_error <= TOL and eq.changed >= 100 * TOL
    g = eq.graph
    stem = stream_group(g, "features.0.0")
    assert ("features.1.1.attn.qkv", "weight", 1) in {(m.module, m.param, m.dim) for m in stem.members}
    stream_group(g, "features.2.reduction")  # the stream after patch merging
    assert [f.id for f in g.frozen if "cpb_mlp" not in f.id] == ["input x", "head"]  # V2: position-bias MLP ends
    pruned = PrunedShiftedWindowAttentionV2 if v2 else PrunedShiftedWindowAttention
    assert isinstance(eq.slimmed.features[1][0].attn, pruned)
    assert eq.macs_pruned < eq.macs_dense


def test_attention_called_on_foreign_weights_is_kept_whole():
    """shifted_window_attention called with weights that are not its module's own layers: not understood."""
    class Odd(ShiftedWindowAttention):
        def forward(self, x):
            return shifted_window_attention(
                x, self.qkv.weight * 1.0, self.proj.weight, self.get_relative_position_bias(), self.window_size,
                self.num_heads, self.shift_size, qkv_bias=self.qkv.bias, proj_bias=self.proj.bias,
            )  # fmt: skip

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = nn.Linear(3, 16)
            self.attn = Odd(16, [4, 4], [0, 0], 2)

        def forward(self, x):
            return self.attn(self.inp(x))

    g = pk.build_graph(M().eval(), torch.randn(1, 8, 8, 3))
    assert not any(m.module == "inp" for grp in g.groups for m in grp.members)
    assert any("shifted_window_attention" in r for f in g.frozen for r in f.reasons)
