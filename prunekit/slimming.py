"""Physical slimming: a new module with pruned channels removed from every member, and the module
attributes (in/out channels, features, groups, num_features) updated to match."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from prunekit.graphs import ChannelGraph, masked
from prunekit.graphs.layers import as_pruned
from prunekit.graphs.trace import unwrap

from .masks import pruned_positions, tensor_of


def slim(model: nn.Module, graph: ChannelGraph, keep: dict[str, Any]) -> nn.Module:
    """A copy of ``model`` with the channels ``keep`` prunes physically removed; ``model`` is untouched.

    ``slim(model, g, keep)(x)`` equals ``apply_masks(copy_of_model, g, keep)(x)`` (eval mode). A graph built
    from another model (other parameter names or shapes) is a ValueError."""
    graph.check_model(unwrap(model))  # a graph of another model would slim the wrong tensors, or fail later
    small = copy.deepcopy(unwrap(model))
    positions = pruned_positions(graph, keep)
    valid = graph.validate_keep(keep)
    masks = graph.stat_masks(valid)
    for site in graph.stats:
        owner = small.get_submodule(site.module) if site.module else small
        masked.remove(owner)  # the slimmed model computes its statistics over what is left
        if site.kind == "layer_norm":  # normalized_shape, checked to be the module's attribute by the graph
            shape = list(owner.normalized_shape)
            shape[site.dim - site.extra["in_dims"] + len(shape)] = int(masks[(site.module, site.buffer)].sum())
            owner.normalized_shape = tuple(shape)
    for module, attr, index, key in graph.size_attrs:  # channel counts written in module attributes
        owner = small.get_submodule(module) if module else small
        old = getattr(owner, attr)
        if index is None:
            setattr(owner, attr, graph.kept_count(module, key, old, valid))
        else:
            new = list(old)
            new[index] = graph.kept_count(module, key, old[index], valid)
            setattr(owner, attr, type(old)(new))
    touched: dict[str, dict[str, torch.Tensor]] = {}
    with torch.no_grad():
        for (module, param), dims in positions.items():
            t = tensor_of(small, module, param)
            new = t
            by_dim: dict[int, list[torch.Tensor]] = {}
            for dim, pos in dims:  # several groups may share one dim (a conv reading a concatenation)
                by_dim.setdefault(dim, []).append(pos)
            for dim, parts in by_dim.items():
                pos = torch.cat(parts)
                n = new.shape[dim]
                if int(pos.max()) >= n:
                    raise ValueError(
                        f"{module}.{param} has {n} positions along dim {dim}; the graph expects more: "
                        "was the graph built on this model (and before it was slimmed)?"
                    )
                alive = torch.ones(n, dtype=torch.bool)
                alive[pos] = False
                new = new.index_select(dim, torch.nonzero(alive).flatten().to(t.device))
            touched.setdefault(module, {})[param] = new
    for module, params in touched.items():
        mod = small.get_submodule(module) if module else small
        before = {k: tuple(getattr(mod, k).shape) for k in params}
        for name, new in params.items():
            if name in mod._parameters:
                old = mod._parameters[name]
                mod._parameters[name] = nn.Parameter(new.contiguous(), requires_grad=old.requires_grad)
            else:
                mod._buffers[name] = new.contiguous()
        _fix_attributes(mod, before)
    for mod in small.modules():  # attention whose inputs now have fewer channels than its heads
        as_pruned(mod)
    return small


def _fix_attributes(mod: nn.Module, before: dict[str, tuple[int, ...]]) -> None:
    """Update a module's size attributes after its tensors were sliced."""
    if isinstance(mod, nn.modules.conv._ConvNd):
        w = mod.weight
        if isinstance(mod, nn.modules.conv._ConvTransposeNd):
            mod.in_channels, mod.out_channels = w.shape[0], w.shape[1] * mod.groups
            return
        old_out = before.get("weight", w.shape)[0]
        # grouped convs lose whole groups (depthwise: one channel per group)
        if mod.groups > 1:
            mod.groups = w.shape[0] * mod.groups // old_out
        mod.out_channels = w.shape[0]
        mod.in_channels = w.shape[1] * mod.groups
    elif isinstance(mod, nn.Linear):
        mod.out_features, mod.in_features = mod.weight.shape
    elif isinstance(mod, (nn.modules.batchnorm._NormBase,)):
        ref = mod.weight if mod.weight is not None else mod.running_mean
        mod.num_features = ref.shape[0]
    elif isinstance(mod, nn.GroupNorm):  # whole groups go (or channels, with one group or one per channel)
        old = before.get("weight", mod.weight.shape)[0]
        mod.num_groups = mod.num_groups * mod.weight.shape[0] // old if mod.num_groups > 1 else 1
        mod.num_channels = mod.weight.shape[0]
    elif isinstance(mod, nn.PReLU):
        mod.num_parameters = mod.weight.shape[0]

