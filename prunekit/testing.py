"""Checks that a pruned model is the model it claims to be: random keep masks, then the slimmed model's
output against the masked model's. Used by the tests, the zoo benchmark, and users checking their own
architectures (``prunekit graph MODEL --check``)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from prunekit.graphs import ChannelGraph, as_inputs, build_graph

from .masks import apply_masks
from .slimming import slim


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
    model: nn.Module, example_inputs: Any, ratio: float = 0.5, seed: int = 0, graph: ChannelGraph | None = None
) -> Equivalence:
    """Random masks at ``ratio``: compare slim(model)(x) with the masked model's output (eval mode)."""
    inputs = as_inputs(example_inputs)
    model = model.eval()
    g = graph or build_graph(model, inputs)
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
    return Equivalence(rel, changed, small_out.shape == dense_out.shape, g.macs(), g.macs(keep), g, keep)
