"""Saving and loading slimmed models as a *pruning plan*: the keep masks, the channel graph (as JSON-able
data) and the slimmed weights. Loading re-applies the plan to a fresh instance of the original
architecture, so no pickled classes are needed:

    pk.save_pruned("small.pt", small, graph, keep, factory="torchvision.models:resnet50")
    small = pk.load_pruned("small.pt")                         # factory recorded in the file
    small = pk.load_pruned("small.pt", model=MyNet())          # or any fresh instance of the architecture
"""

from __future__ import annotations

import importlib
import os
import tempfile
from typing import Any

import torch
from torch import nn

from prunekit.graphs import ChannelGraph

from .slimming import slim

FORMAT = "prunekit-plan/1"


def save_pruned(
    path: str,
    slimmed: nn.Module,
    graph: ChannelGraph,
    keep: dict[str, Any],
    factory: str | None = None,
    factory_kwargs: dict[str, Any] | None = None,
) -> None:
    """Write ``slimmed`` as a plan. ``factory``: "package.module:callable" that builds the dense
    architecture (with ``factory_kwargs``), so ``load_pruned(path)`` needs nothing else."""
    keep = graph.validate_keep(keep)
    plan = {
        "format": FORMAT,
        "factory": factory,
        "factory_kwargs": factory_kwargs or {},
        "graph": graph.to_dict(),
        "keep": {k: v.tolist() for k, v in keep.items()},
        "state_dict": slimmed.state_dict(),
    }
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(plan, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def build_from_factory(factory: str, kwargs: dict[str, Any] | None = None) -> nn.Module:
    """Call "package.module:callable" with ``kwargs``; a clear error when it cannot be found."""
    mod_name, sep, attr = factory.partition(":")
    if not sep:
        raise ValueError(f"factory {factory!r} must look like 'package.module:callable'")
    try:
        fn = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"cannot load the model factory {factory!r}: {e}") from e
    return fn(**(kwargs or {}))


def load_pruned(path: str, model: nn.Module | None = None, map_location: str = "cpu") -> nn.Module:
    """The slimmed model saved at ``path``, rebuilt from the original architecture."""
    plan = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(plan, dict) or plan.get("format") != FORMAT:
        raise ValueError(f"{path} is not a prunekit plan (written by prunekit.save_pruned)")
    if model is None:
        if not plan.get("factory"):
            raise ValueError(f"{path} records no factory: pass a fresh instance of the architecture as model=")
        model = build_from_factory(plan["factory"], plan["factory_kwargs"])
    graph = ChannelGraph.from_dict(plan["graph"])
    keep = {k: torch.tensor(v, dtype=torch.bool) for k, v in plan["keep"].items()}
    small = slim(model, graph, keep)
    small.load_state_dict(plan["state_dict"])
    return small
