"""Checks that a pruned model is the model it claims to be: random keep masks, then the slimmed model's
output against the masked model's. Used by the tests, the zoo benchmark, and users checking their own
architectures (``prunekit graph MODEL --check``).

A freshly initialized model hides mistakes: BatchNorm in eval mode with its default statistics and affine
parameters (mean 0, var 1, gamma 1, beta 0) is nearly the identity, zero biases and ConvNeXt's 1e-6 layer
scales make whole branches vanish, and a slimmed model that drops or misplaces those values would still
match. ``check_equivalence`` therefore randomizes them on a copy first (``randomize_parameters``) and
reports ``changed``, how much the masks moved the output: a check whose masks barely change the output
proves nothing.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from prunekit.graphs import ChannelGraph, as_inputs, build_graph

from .masks import apply_masks
from .slimming import slim


def randomize_parameters(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every value a fresh init leaves at a constant a random one, in place (returns ``model``):
    BatchNorm running mean/var and affine weight/bias, GroupNorm/LayerNorm/InstanceNorm affine parameters,
    the biases of every conv and linear layer, layer scales (parameters named ``*layer_scale*``), and any other
    parameter that is still constant (a zero-initialized classifier or token, a gain of ones).
    Ranges keep activations at their init scale: scales in [0.5, 1.5], shifts and means N(0, 0.1^2)."""
    gen = torch.Generator().manual_seed(seed)

    def uniform_(t: torch.Tensor, lo: float, hi: float) -> None:
        t.copy_(torch.rand(t.shape, generator=gen, dtype=torch.float64).mul(hi - lo).add(lo).to(t))

    def normal_(t: torch.Tensor, std: float) -> None:
        t.copy_(torch.randn(t.shape, generator=gen, dtype=torch.float64).mul(std).to(t))

    norms = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, norms):
                if getattr(mod, "running_mean", None) is not None:
                    normal_(mod.running_mean, 0.1)
                if getattr(mod, "running_var", None) is not None:
                    uniform_(mod.running_var, 0.5, 1.5)
                if getattr(mod, "weight", None) is not None:
                    uniform_(mod.weight, 0.5, 1.5)
                if getattr(mod, "bias", None) is not None:
                    normal_(mod.bias, 0.1)
            elif isinstance(mod, (nn.modules.conv._ConvNd, nn.Linear)) and mod.bias is not None:
                normal_(mod.bias, 0.1)
        for name, p in model.named_parameters():
            if "layer_scale" in name.rsplit(".", 1)[-1]:
                uniform_(p, 0.5, 1.5)
            elif p.numel() > 1 and bool((p == p.flatten()[0]).all()):
                # still constant: zero-initialized heads (torchvision ViT), tokens, attention biases, gains
                if float(p.flatten()[0]) != 0.0:
                    p.mul_(torch.rand(p.shape, generator=gen, dtype=torch.float64).add(0.5).to(p))
                elif p.dim() >= 2:
                    normal_(p, p[0].numel() ** -0.5)
                else:
                    normal_(p, 0.1)
    return model


def random_keep(graph: ChannelGraph, ratio: float = 0.5, seed: int = 0) -> dict[str, torch.Tensor]:
    """Keep each channel with probability ``ratio`` (at least one per group), reproducibly."""
    gen = torch.Generator().manual_seed(seed)
    keep = {}
    for grp in graph.groups:
        mask = torch.rand(grp.size, generator=gen) < ratio
        if not mask.any():
            mask[torch.randint(grp.size, (1,), generator=gen)] = True
        keep[grp.id] = mask
    return keep


@dataclass
class Equivalence:
    """What ``check_equivalence`` found."""

    rel_error: float  # max |slim - masked| / max |masked|
    changed: float  # max |masked - dense| / max |dense|: how much the masks changed the output
    shape_ok: bool
    macs_dense: int
    macs_pruned: int
    graph: ChannelGraph
    keep: dict[str, torch.Tensor]
    slimmed: nn.Module | None = None  # the slimmed model that was checked


def _first_tensor(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict):
        out = list(out.values())
    for o in out:
        t = _first_tensor(o)
        if t is not None:
            return t
    raise TypeError("model output holds no tensor")


def check_equivalence(
    model: nn.Module,
    example_inputs: Any,
    ratio: float = 0.5,
    seed: int = 0,
    graph: ChannelGraph | None = None,
    randomize: bool = True,
) -> Equivalence:
    """Random masks at ``ratio``: compare slim(model)(x) with the masked model's output (eval mode).

    ``randomize``: check a copy of ``model`` whose norm statistics and affine parameters, biases and layer
    scales are random (``randomize_parameters``, seeded by ``seed``); ``model`` itself is left as it is."""
    inputs = as_inputs(example_inputs)
    model = model.eval()
    g = graph or build_graph(model, inputs)
    if randomize:
        model = randomize_parameters(copy.deepcopy(model), seed)
    keep = random_keep(g, ratio, seed)
    masked = apply_masks(copy.deepcopy(model), g, keep).eval()
    small = slim(model, g, keep).eval()
    with torch.no_grad():
        dense_out = _first_tensor(model(*inputs))
        masked_out = _first_tensor(masked(*inputs))
        small_out = _first_tensor(small(*inputs))
    scale = masked_out.abs().max().clamp_min(1e-12)
    rel = float((small_out - masked_out).abs().max() / scale) if small_out.shape == masked_out.shape else float("inf")
    changed = float((masked_out - dense_out).abs().max() / dense_out.abs().max().clamp_min(1e-12))
    return Equivalence(rel, changed, small_out.shape == dense_out.shape, g.macs(), g.macs(keep), g, keep, small)
