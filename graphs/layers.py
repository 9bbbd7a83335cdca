"""Layers that slimming substitutes where a standard layer cannot hold pruned shapes.

``nn.MultiheadAttention`` ties the channel count of its query input to its head width (``embed_dim``): with
the residual stream of a transformer pruned, its inputs have fewer channels than its heads, which
``F.multi_head_attention_forward`` refuses. ``PrunedMultiheadAttention`` is the same layer (same parameters,
same attention) whose input projections read however many input channels are left; its heads, and so the
attention itself and its ``1/sqrt(head_dim)`` scale, are unchanged. Slimming switches the class of a
``MultiheadAttention`` whose input channels were pruned to this one (``as_pruned``). torchvision's Swin
attention takes its head width from its input's channel count in the same way: ``window_attention`` is its
computation with the head width taken from the weights, and ``PrunedShiftedWindowAttention(V2)`` use it.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
import torchvision.models.swin_transformer as swin
from torch import Tensor, nn


class PrunedMultiheadAttention(nn.MultiheadAttention):
    """``nn.MultiheadAttention`` whose query/key/value inputs may have fewer channels than ``embed_dim``."""

    def forward(  # type: ignore[override]
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        # the steps of F.multi_head_attention_forward, with the input projections taking their widths from
        # the weights instead of from embed_dim
        is_batched = query.dim() == 3
        if self.batch_first and is_batched:
            query, key, value = (t.transpose(1, 0) for t in (query, key, value))
        if not is_batched:
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        tgt_len, bsz = query.shape[:2]
        key_padding_mask = F._canonical_mask(
            mask=key_padding_mask,
            mask_name="key_padding_mask",
            other_type=F._none_or_dtype(attn_mask),
            other_name="attn_mask",
            target_type=query.dtype,
        )
        if is_causal and attn_mask is None:
            raise RuntimeError("Need attn_mask if specifying the is_causal hint.")
        if is_causal and key_padding_mask is None and not need_weights:
            attn_mask = None
        else:
            attn_mask = F._canonical_mask(
                mask=attn_mask,
                mask_name="attn_mask",
                other_type=None,
                other_name="",
                target_type=query.dtype,
                check_other=False,
            )
            if key_padding_mask is not None:
                is_causal = False
        E, H = self.embed_dim, self.num_heads
        head_dim = E // H
        b = self.in_proj_bias
        b_q, b_k, b_v = (None, None, None) if b is None else b.chunk(3)
        if self._qkv_same_embed_dim:
            w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        else:
            w_q, w_k, w_v = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
        q, k, v = F.linear(query, w_q, b_q), F.linear(key, w_k, b_k), F.linear(value, w_v, b_v)
        if attn_mask is not None and attn_mask.dim() == 2:
            attn_mask = attn_mask.unsqueeze(0)
        if self.bias_k is not None and self.bias_v is not None:
            k = torch.cat([k, self.bias_k.repeat(1, bsz, 1)])
            v = torch.cat([v, self.bias_v.repeat(1, bsz, 1)])
            if attn_mask is not None:
                attn_mask = F.pad(attn_mask, (0, 1))
            if key_padding_mask is not None:
                key_padding_mask = F.pad(key_padding_mask, (0, 1))
        q = q.view(tgt_len, bsz * H, head_dim).transpose(0, 1)
        k = k.view(k.shape[0], bsz * H, head_dim).transpose(0, 1)
        v = v.view(v.shape[0], bsz * H, head_dim).transpose(0, 1)
        if self.add_zero_attn:
            zeros = torch.zeros((bsz * H, 1, head_dim), dtype=k.dtype, device=k.device)
            k, v = torch.cat([k, zeros], dim=1), torch.cat([v, zeros], dim=1)
            if attn_mask is not None:
                attn_mask = F.pad(attn_mask, (0, 1))
            if key_padding_mask is not None:
                key_padding_mask = F.pad(key_padding_mask, (0, 1))
        src_len = k.size(1)
        if key_padding_mask is not None:
            key_padding_mask = (
                key_padding_mask.view(bsz, 1, 1, src_len).expand(-1, H, -1, -1).reshape(bsz * H, 1, src_len)
            )
            attn_mask = key_padding_mask if attn_mask is None else attn_mask + key_padding_mask
        dropout_p = self.dropout if self.training else 0.0
        if need_weights:
            q_scaled = q * math.sqrt(1.0 / float(head_dim))
            if attn_mask is not None:
                weights = torch.baddbmm(attn_mask, q_scaled, k.transpose(-2, -1))
            else:
                weights = torch.bmm(q_scaled, k.transpose(-2, -1))
            weights = F.softmax(weights, dim=-1)
            if dropout_p > 0.0:
                weights = F.dropout(weights, p=dropout_p)
            out = torch.bmm(weights, v).transpose(0, 1).reshape(tgt_len * bsz, E)
            out = F.linear(out, self.out_proj.weight, self.out_proj.bias).view(tgt_len, bsz, -1)
            weights = weights.view(bsz, H, tgt_len, src_len)
            if average_attn_weights:
                weights = weights.mean(dim=1)
            if not is_batched:
                out, weights = out.squeeze(1), weights.squeeze(0)
        else:
            if attn_mask is not None:
                if attn_mask.size(0) == 1 and attn_mask.dim() == 3:
                    attn_mask = attn_mask.unsqueeze(0)
                else:
                    attn_mask = attn_mask.view(bsz, H, -1, src_len)
            q = q.view(bsz, H, tgt_len, head_dim)
            k = k.view(bsz, H, src_len, head_dim)
            v = v.view(bsz, H, src_len, head_dim)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask, dropout_p, is_causal)
            out = out.permute(2, 0, 1, 3).reshape(bsz * tgt_len, E)
            out = F.linear(out, self.out_proj.weight, self.out_proj.bias).view(tgt_len, bsz, -1)
            weights = None
            if not is_batched:
                out = out.squeeze(1)
        if self.batch_first and is_batched:
            out = out.transpose(1, 0)
        return out, weights


def as_pruned(mod: nn.Module) -> None:
    """Make an attention layer whose input channels were sliced run with them (in place; others untouched):
    ``nn.MultiheadAttention`` and torchvision's Swin window attention."""
    if isinstance(mod, nn.MultiheadAttention):
        w = mod.in_proj_weight if mod._qkv_same_embed_dim else mod.q_proj_weight
        if w.shape[1] != mod.embed_dim and type(mod) is nn.MultiheadAttention:
            mod.__class__ = PrunedMultiheadAttention
        if mod._qkv_same_embed_dim:
            mod.kdim = mod.vdim = mod.in_proj_weight.shape[1]
        else:
            mod.kdim, mod.vdim = mod.k_proj_weight.shape[1], mod.v_proj_weight.shape[1]
    elif type(mod) in _PRUNED and mod.qkv.in_features != mod.proj.in_features:
        mod.__class__ = _PRUNED[type(mod)]


def window_attention(
    input: Tensor,
    qkv_weight: Tensor,
    proj_weight: Tensor,
    relative_position_bias: Tensor,
    window_size: list[int],
    num_heads: int,
    shift_size: list[int],
    attention_dropout: float = 0.0,
    dropout: float = 0.0,
    qkv_bias: Tensor | None = None,
    proj_bias: Tensor | None = None,
    logit_scale: Tensor | None = None,
    training: bool = True,
) -> Tensor:
    """Swin's (shifted) window attention, as torchvision's ``shifted_window_attention`` computes it, with the
    head width taken from ``proj_weight`` instead of from the input: the input and output may have fewer
    channels than the heads (a pruned residual stream)."""
    B, H, W, _ = input.shape
    inner = proj_weight.shape[1]
    wh, ww = window_size
    x = F.pad(input, (0, 0, 0, (ww - W % ww) % ww, 0, (wh - H % wh) % wh))
    _, pH, pW, c_in = x.shape
    sh, sw = (0 if wh >= pH else shift_size[0]), (0 if ww >= pW else shift_size[1])
    shifted = sh + sw > 0
    if shifted:
        x = torch.roll(x, shifts=(-sh, -sw), dims=(1, 2))
    nh, nw = pH // wh, pW // ww
    x = x.view(B, nh, wh, nw, ww, c_in).permute(0, 1, 3, 2, 4, 5).reshape(B * nh * nw, wh * ww, c_in)
    if logit_scale is not None and qkv_bias is not None:  # V2: no key bias
        qkv_bias = torch.cat([qkv_bias[:inner], torch.zeros_like(qkv_bias[inner : 2 * inner]), qkv_bias[2 * inner :]])
    qkv = F.linear(x, qkv_weight, qkv_bias)
    qkv = qkv.reshape(x.size(0), x.size(1), 3, num_heads, inner // num_heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    if logit_scale is not None:
        attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        attn = attn * torch.clamp(logit_scale, max=math.log(100.0)).exp()
    else:
        attn = (q * (inner // num_heads) ** -0.5).matmul(k.transpose(-2, -1))
    attn = attn + relative_position_bias
    if shifted:  # tokens rolled in from the other side of the image attend only to each other
        region = x.new_zeros((pH, pW))
        count = 0
        for h0, h1 in ((0, -wh), (-wh, -sh), (-sh, None)):
            for w0, w1 in ((0, -ww), (-ww, -sw), (-sw, None)):
                region[h0:h1, w0:w1] = count
                count += 1
        region = region.view(nh, wh, nw, ww).permute(0, 2, 1, 3).reshape(nh * nw, wh * ww)
        mask = region.unsqueeze(1) - region.unsqueeze(2)
        mask = mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)
        attn = attn.view(B, nh * nw, num_heads, x.size(1), x.size(1)) + mask.unsqueeze(1).unsqueeze(0)
        attn = attn.view(-1, num_heads, x.size(1), x.size(1))
    attn = F.dropout(F.softmax(attn, dim=-1), p=attention_dropout, training=training)
    x = attn.matmul(v).transpose(1, 2).reshape(x.size(0), x.size(1), inner)
    x = F.dropout(F.linear(x, proj_weight, proj_bias), p=dropout, training=training)
    c_out = x.shape[-1]
    x = x.view(B, nh, nw, wh, ww, c_out).permute(0, 1, 3, 2, 4, 5).reshape(B, pH, pW, c_out)
    if shifted:
        x = torch.roll(x, shifts=(sh, sw), dims=(1, 2))
    return x[:, :H, :W, :].contiguous()


torch.fx.wrap("window_attention")


def _window_forward(self: Any, x: Tensor) -> Tensor:
    return window_attention(
        x,
        self.qkv.weight,
        self.proj.weight,
        self.get_relative_position_bias(),
        self.window_size,
        self.num_heads,
        shift_size=self.shift_size,
        attention_dropout=self.attention_dropout,
        dropout=self.dropout,
        qkv_bias=self.qkv.bias,
        proj_bias=self.proj.bias,
        logit_scale=getattr(self, "logit_scale", None),
        training=self.training,
    )


class PrunedShiftedWindowAttention(swin.ShiftedWindowAttention):
    """torchvision's ``ShiftedWindowAttention`` with a pruned residual stream (``window_attention``)."""

    forward = _window_forward


class PrunedShiftedWindowAttentionV2(swin.ShiftedWindowAttentionV2):
    """torchvision's ``ShiftedWindowAttentionV2`` with a pruned residual stream (``window_attention``)."""

    forward = _window_forward


_PRUNED = {
    swin.ShiftedWindowAttention: PrunedShiftedWindowAttention,
    swin.ShiftedWindowAttentionV2: PrunedShiftedWindowAttentionV2,
}
WINDOW_ATTENTION = (swin.shifted_window_attention, window_attention)
