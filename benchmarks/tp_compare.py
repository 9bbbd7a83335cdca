"""Compare prunekit's channel groups with Torch-Pruning's DependencyGraph on one model.

    .venv/bin/python benchmarks/tp_compare.py resnet18 mobilenet_v2 shufflenet_v2_x0_5   # prints a report

Both sides are reduced to the same thing: a *set partition* of the prunable output channels of every
conv / linear layer, as (module name, output-channel index) pairs. Two pairs are in the same block when
pruning one forces pruning the other.

- Torch-Pruning: for every group of ``DG.get_all_groups(ignored_layers=[classifier],
  root_module_types=[Conv2d, Linear])``, the out-channel pruning dependencies
  (``prune_conv_out_channels``, ``prune_linear_out_channels``, depthwise convs included) give
  (module, idx) pairs; pairs with the same ``root_idx`` are one coupled channel.
- prunekit: for every prunable group, the members with role "out" (conv/linear ``weight`` dim 0) and
  "dw" (a depthwise conv's per-channel filters: Torch-Pruning also prunes them by out-channel pruning,
  so they are included) give (module, position) pairs; pairs owned by the same group channel are one block.
Frozen channels (ours) and ignored layers / groups touching them (TP) are left out of the universe, so
a pair that is prunable on one side only is reported as a *coverage* difference, not a partition one.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

Pair = tuple[str, int]  # (module qualified name, output-channel index)


@dataclass
class Comparison:
    """What ``compare`` found on one model."""

    model: str
    tp_ok: bool
    tp_error: str = ""
    ours_pairs: int = 0
    tp_pairs: int = 0
    ours_blocks: int = 0
    tp_blocks: int = 0
    only_ours: dict[str, int] = field(default_factory=dict)  # module -> #channels prunable only in ours
    only_tp: dict[str, int] = field(default_factory=dict)  # module -> #channels prunable only in TP
    # on the common pairs: blocks that TP splits but we couple (merged) and vice versa, as module sets
    ours_coarser: list[tuple[str, ...]] = field(default_factory=list)
    tp_coarser: list[tuple[str, ...]] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return self.tp_ok and not (self.only_ours or self.only_tp or self.ours_coarser or self.tp_coarser)

    def summary(self) -> str:
        if not self.tp_ok:
            return (
                f"{self.model}: Torch-Pruning fails ({self.tp_error}); "
                f"ours {self.ours_pairs} channels in {self.ours_blocks} coupled sets"
            )
        head = (
            f"{self.model}: ours {self.ours_pairs} channels in {self.ours_blocks} coupled sets, "
            f"TP {self.tp_pairs} in {self.tp_blocks}"
        )
        if self.identical:
            return head + ": identical partition"
        lines = [head]
        if self.only_ours:
            lines.append(f"  prunable only in ours: {_fmt(self.only_ours)}")
        if self.only_tp:
            lines.append(f"  prunable only in TP:   {_fmt(self.only_tp)}")
        for mods in self.ours_coarser[:8]:
            lines.append(f"  ours couples, TP splits: {', '.join(mods)}")
        for mods in self.tp_coarser[:8]:
            lines.append(f"  TP couples, ours splits: {', '.join(mods)}")
        return "\n".join(lines)


def _fmt(d: dict[str, int], n: int = 6) -> str:
    items = sorted(d.items())
    s = ", ".join(f"{k} ({v})" for k, v in items[:n])
    return s + (f", ... {len(items) - n} more" if len(items) > n else "")


def classifier_of(model: nn.Module) -> tuple[str, nn.Module]:
    """The final classifier: the last nn.Linear, or the last conv when there is none (SqueezeNet)."""
    last = None
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            last = (name, m)
    if last is None:
        for name, m in model.named_modules():
            if isinstance(m, nn.Conv2d):
                last = (name, m)
    assert last is not None, "no conv or linear layer"
    return last


def ours_partition(graph) -> list[set[Pair]]:
    """Coupled sets of prunable (module, out-channel) pairs from a prunekit ChannelGraph."""
    blocks: list[set[Pair]] = []
    for grp in graph.groups:
        per_channel: dict[int, set[Pair]] = defaultdict(set)
        for m in grp.members:
            if m.role in ("out", "dw") and m.param == "weight" and m.dim == 0:
                for p, c in zip(m.positions.tolist(), m.channels.tolist(), strict=True):
                    per_channel[c].add((m.module, p))
        blocks.extend(s for s in per_channel.values() if s)
    return blocks


def tp_partition(model: nn.Module, example_inputs: torch.Tensor, ignored: list[nn.Module]) -> list[set[Pair]]:
    """Coupled sets of (module, out-channel) pairs from Torch-Pruning's DependencyGraph."""
    import torch_pruning as tp

    dg = tp.DependencyGraph().build_dependency(model, example_inputs=example_inputs, verbose=False)
    names = {m: n for n, m in model.named_modules()}
    blocks: list[set[Pair]] = []
    for group in dg.get_all_groups(ignored_layers=ignored, root_module_types=[nn.Conv2d, nn.Linear]):
        per_root: dict[int, set[Pair]] = defaultdict(set)
        for item in group.items:
            dep = item.dep
            mod = dep.target.module
            if not isinstance(mod, (nn.Conv2d, nn.Linear)) or not dg.is_out_channel_pruning_fn(dep.handler):
                continue
            for i, r in zip(item.idxs, item.root_idxs, strict=True):
                per_root[int(r)].add((names[mod], int(i)))
        blocks.extend(s for s in per_root.values() if s)
    return _merge(blocks)


def _merge(blocks: list[set[Pair]]) -> list[set[Pair]]:
    """The finest partition coarser than ``blocks`` (a pair in two blocks joins them)."""
    parent: dict[Pair, Pair] = {}

    def find(a: Pair) -> Pair:
        while parent.setdefault(a, a) != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for b in blocks:
        it = iter(b)
        first = find(next(it))
        for p in it:
            r = find(p)
            if r != first:
                parent[r] = first
    out: dict[Pair, set[Pair]] = defaultdict(set)
    for p in parent:
        out[find(p)].add(p)
    return list(out.values())


def _coarser(a: list[set[Pair]], b_index: dict[Pair, int], common: set[Pair]) -> list[tuple[str, ...]]:
    """Blocks of ``a`` (restricted to ``common``) that meet several blocks of ``b``: the modules involved,
    each distinct module set reported once."""
    seen: set[tuple[str, ...]] = set()
    for blk in a:
        blk = blk & common
        if len({b_index[p] for p in blk}) > 1:
            seen.add(tuple(sorted({m for m, _ in blk})))
    return sorted(seen)


def compare_partitions(model_name: str, ours: list[set[Pair]], theirs: list[set[Pair]]) -> Comparison:
    ours_idx = {p: i for i, b in enumerate(ours) for p in b}
    tp_idx = {p: i for i, b in enumerate(theirs) for p in b}
    only_ours: dict[str, int] = defaultdict(int)
    only_tp: dict[str, int] = defaultdict(int)
    for p in ours_idx.keys() - tp_idx.keys():
        only_ours[p[0]] += 1
    for p in tp_idx.keys() - ours_idx.keys():
        only_tp[p[0]] += 1
    common = ours_idx.keys() & tp_idx.keys()
    return Comparison(
        model=model_name,
        tp_ok=True,
        ours_pairs=len(ours_idx),
        tp_pairs=len(tp_idx),
        ours_blocks=len(ours),
        tp_blocks=len(theirs),
        only_ours=dict(only_ours),
        only_tp=dict(only_tp),
        ours_coarser=_coarser(ours, tp_idx, common),
        tp_coarser=_coarser(theirs, ours_idx, common),
    )


def make_model(name: str) -> nn.Module:
    import torchvision

    kwargs: dict[str, Any] = {"num_classes": 10}
    if name in ("googlenet", "inception_v3"):
        kwargs.update(aux_logits=False, init_weights=False)
    return torchvision.models.get_model(name, **kwargs).eval()


def input_size(name: str) -> int:
    if name.startswith(("vit_", "swin_", "maxvit_")):
        return 224
    return 96 if name.startswith("inception") else 64


def compare(name: str, model: nn.Module | None = None, size: int | None = None) -> Comparison:
    """Build both graphs on ``name`` (a torchvision model name, or any label when ``model`` is given)."""
    import prunekit as pk

    model = model if model is not None else make_model(name)
    s = size or input_size(name)
    x = torch.randn(1, 3, s, s)
    ours = ours_partition(pk.build_graph(model, x))
    _, cls = classifier_of(model)
    try:
        theirs = tp_partition(model, x, [cls])
    except Exception as e:  # Torch-Pruning cannot build on this model
        msg = str(e).splitlines()[0][:160] if str(e) else ""
        return Comparison(
            name, False, f"{type(e).__name__}: {msg}", ours_pairs=sum(map(len, ours)), ours_blocks=len(ours)
        )
    return compare_partitions(name, ours, theirs)


if __name__ == "__main__":
    for n in sys.argv[1:] or ["resnet18", "mobilenet_v2", "densenet121", "efficientnet_b0", "googlenet"]:
        print(compare(n).summary(), flush=True)
