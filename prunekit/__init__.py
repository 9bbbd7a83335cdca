"""prunekit: structured (channel) pruning of PyTorch CNNs.

    import prunekit as pk
    g = pk.build_graph(model, torch.randn(1, 3, 224, 224))   # coupled channel groups
    small = pk.slim(model, g, keep)                          # channels physically removed

Names are imported lazily so ``import prunekit`` stays fast and the layers load only what they use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "build_graph": "prunekit.graphs",
    "ChannelGraph": "prunekit.graphs",
    "ChannelGroup": "prunekit.graphs",
    "Member": "prunekit.graphs",
    "GraphBuildError": "prunekit.graphs",
    "apply_masks": "prunekit.masks",
    "pruned_positions": "prunekit.masks",
    "slim": "prunekit.slimming",
    "count_macs": "prunekit.flops",
    "count_params": "prunekit.flops",
    "save_pruned": "prunekit.plan",
    "load_pruned": "prunekit.plan",
    "save_plan": "prunekit.plan",
    "load_plan": "prunekit.plan",
    "export_onnx": "prunekit.onnx_export",
    "Strategy": "prunekit.strategy",
    "PruningState": "prunekit.strategy",
    "Budget": "prunekit.strategy",
    "register_strategy": "prunekit.registry",
    "get_strategy": "prunekit.registry",
    "list_strategies": "prunekit.registry",
    "PruningController": "prunekit.controller",
    "run": "prunekit.harness",
    "RunResult": "prunekit.harness",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'prunekit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
