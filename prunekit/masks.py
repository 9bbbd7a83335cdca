"""Keep masks applied to a model in place: pruned channels zeroed in every member, so the masked model
computes what the slimmed one does."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from prunekit.graphs import ChannelGraph, masked
from prunekit.graphs.graph import lookup_tensor as tensor_of
from prunekit.graphs.trace import unwrap

Positions = dict[tuple[str, str], list[tuple[int, torch.Tensor]]]


def pruned_positions(graph: ChannelGraph, keep: dict[str, Any]) -> Positions:
    """{(module, param): [(dim, positions to zero), ...]} for the channels ``keep`` prunes."""
    keep = graph.validate_keep(keep)
    out: Positions = {}
    for gid, mask in keep.items():
        if bool(mask.all()):
            continue
        for m in graph[gid].members:
            pos = m.positions[~mask[m.channels]]
            if len(pos):
                out.setdefault((m.module, m.param), []).append((m.dim, pos))
    return out


@torch.no_grad()
def apply_masks(model: nn.Module, graph: ChannelGraph, keep: dict[str, Any]) -> nn.Module:
    """Zero the pruned channels of ``keep`` in every member of ``model`` (in place); returns ``model``."""
    bare = unwrap(model)
    graph.check_model(bare)
    for (module, param), dims in pruned_positions(graph, keep).items():
        t = tensor_of(bare, module, param)
        for dim, pos in dims:
            if int(pos.max()) >= t.shape[dim]:
                raise ValueError(
                    f"{module}.{param} has {t.shape[dim]} positions along dim {dim} but the graph expects more: "
                    "was the graph built on this model (and before it was slimmed)?"
                )
            t.index_fill_(dim, pos.to(t.device), 0)
    apply_stat_masks(bare, graph, keep)
    return model


def apply_stat_masks(model: nn.Module, graph: ChannelGraph, keep: dict[str, Any]) -> None:
    """Make every statistics over channels (LayerNorm over channels, GroupNorm with one group, a mean over
    channels) use only the channels ``keep`` keeps, as the slimmed model does (graphs/masked.py)."""
    if not graph.stats:
        return
    keep = graph.validate_keep(keep)
    masks = graph.stat_masks(keep)
    owners: dict[str, bool] = {}
    for site in graph.stats:
        mod = model.get_submodule(site.module) if site.module else model
        mask = masks[(site.module, site.buffer)]
        pruned = not bool(mask.all())
        owners[site.module] = owners.get(site.module, False) or pruned
        if pruned or masked.installed(mod):
            masked.install(mod, site, mask)
    for name, pruned in owners.items():
        if not pruned:  # nothing pruned there: the module's own forward again
            masked.remove(model.get_submodule(name) if name else model)
