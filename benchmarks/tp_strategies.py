"""Torch-Pruning's own pruner as two prunekit strategies: ``tp_magnitude`` and ``tp_bnscale``.

    import benchmarks.tp_strategies        # registers both through @pk.register_strategy
    prunekit run --config configs/fashion_mnist_resnet20.yaml --plugins benchmarks.tp_strategies \\
        --set prune.strategy=tp_magnitude --set prune.params.input_size=28

Needs torch-pruning (``pip install torch-pruning``; it is in prunekit's ``dev`` extra). The module imports
without it; constructing either strategy then raises an ImportError that says how to install it.

What "Torch-Pruning's own pruner" means here (TP 1.x, as its benchmarks/main.py uses it):

- the pruner is ``tp.pruner.MetaPruner`` with TP's defaults: **local** ranking (each coupled group keeps
  the fraction ``1 - ratio`` of its channels, ``int()``-rounded as TP does), importance aggregated over the
  coupled layers of a group by the importance object; layers whose outputs prunekit freezes (the
  classifier) are TP's ``ignored_layers``;
- a MACs target is reached the way TP's ``prune_to_target_macs`` does it: ``pruning_ratio=1.0`` split in
  ``iterative_steps`` (default 400) linear steps, and after every step TP physically prunes its model
  (a deep copy of ours) and re-scores the survivors. We record, per prunekit group, the original channel
  indices each step removes (read from the conv out-channel indices of the interactive step's groups and
  mapped onto our groups through their ``out`` members), which gives a monotone trajectory of widths
  and a removal order per group;
- ``allocate(state, budget)`` returns the widths at TP's pruning ratio S = ``budget.sparsity``: after
  step ``k = floor(S * steps)``, plus, for the fraction of the next step, the first groups TP pruned in it
  (TP scores every group of a step before it prunes any, then yields and prunes them one by one, so each
  of these states is one TP actually passes through). The controller's bisection over S then stops TP
  where the MACs target is met -- TP's ``prune_to_target_macs`` stops after the first whole step at or
  past the target, which at ResNet-20's widths can overshoot by several percent (16, 32 and 64 channels
  cross TP's ``int()`` rounding at the same ratios); stopping inside a step keeps the comparison at equal
  MACs. When one group's cut still jumps across the target by more than 1%, prunekit's usual rule holds
  that group at its wider width (with TP's channels for that width) and goes on with the others. MACs
  are counted by prunekit's graph, the same for every strategy;
- ``prune(state, group, k)`` keeps all but the first ``size - k`` channels TP removed from the group
  (channels removed in the same step in index order).

Not reproduced: TP's global ranking (``global_pruning=True`` refuses groups it would empty, so the width
is not monotone in the ratio and a MACs bisection cannot use it) and the sparsity-training phase of TP's
``BNScalePruner`` (network slimming: an L1 penalty on BN scales before pruning). The choice is one-shot at
``prune_step`` (0: before training, from the initial weights), then the harness trains the masked model
exactly as for ``magnitude``. At initialization every BN scale is 1, so ``tp_bnscale`` at step 0 ranks
ties: its channels are TP's tie order, in effect arbitrary channels with TP's uniform widths.
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from prunekit.graphs import ChannelGroup
from torch import nn

import prunekit as pk
from prunekit.strategy import Budget, Param, PruningState, Schedule

INSTALL_HINT = "pip install torch-pruning (or `pip install -e .[dev]`)"


def require_torch_pruning(strategy: str) -> Any:
    """The ``torch_pruning`` module, or an ImportError that names the strategy and how to install it."""
    try:
        import torch_pruning as tp
    except ImportError as e:
        raise ImportError(
            f"strategy {strategy!r} runs Torch-Pruning's own pruner, but torch-pruning is not installed: {INSTALL_HINT}"
        ) from e
    return tp


@dataclass
class Trajectory:
    """TP's progressive pruning of one model, in prunekit's group indices.

    ``order[gid]``: the group's channels in the order TP removed them. ``removed[i][gid]``: how many were
    removed in state i; a state follows every TP group that cut channels (``removed[0]``: none), and
    ``step_end[k]`` is the state after TP step k (``step_end[0] = 0``)."""

    order: dict[str, list[int]]
    removed: list[dict[str, int]]
    step_end: list[int]
    seconds: float = 0.0

    def state_at(self, sparsity: float) -> int:
        """The state at TP pruning ratio ``sparsity``: whole steps, then a fraction of the next step's groups."""
        steps = len(self.step_end) - 1
        x = min(max(float(sparsity), 0.0), 1.0) * steps
        k = min(steps, int(math.floor(x + 1e-9)))
        if k == steps:
            return self.step_end[k]
        inside = self.step_end[k + 1] - self.step_end[k]
        return self.step_end[k] + min(inside, int(math.floor(max(0.0, x - k) * inside)))


def example_input(model: nn.Module, size: int) -> torch.Tensor:
    """A zero input for TP's trace: [1, C, size, size] for the first conv's C (or [1, F] for a first Linear)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return torch.zeros(1, m.in_channels, size, size)
        if isinstance(m, nn.Linear):
            return torch.zeros(1, m.in_features)
    raise ValueError("Torch-Pruning strategies need a model with a Conv2d or Linear layer")


class TorchPruningStrategy(pk.Strategy):
    """Base: run Torch-Pruning's MetaPruner progressively on a copy and replay its choices as masks."""

    params = {
        "iterative_steps": Param(
            int, 400, min=1, help="TP steps from ratio 0 to 1 (TP's benchmarks use 400); the MACs target picks one"
        ),
        "prune_step": Param(int, 0, min=0, help="optimizer step at which to prune (0: before training)"),
        "input_size": Param(int, 32, min=1, help="side of the dummy input TP traces (the data's image size)"),
    }

    _trajectory: tuple[tuple[int, int], Trajectory] | None = None  # ((step, round_to), TP's run at that step)

    def check(self) -> None:
        require_torch_pruning(self.name or type(self).__name__)

    def importance(self, tp: Any) -> Any:
        raise NotImplementedError

    def schedule(self, steps_per_epoch: int, epochs: int) -> Schedule:
        return Schedule.once(self.prune_step)

    # -- TP's run ----------------------------------------------------------------------------------

    def trajectory(self, state: PruningState, round_to: int = 1) -> Trajectory:
        """TP's progressive pruning from the model as it is now (cached for this event)."""
        key = (state.step, round_to)
        if self._trajectory is None or self._trajectory[0] != key:
            self._trajectory = (key, self._run_tp(state, round_to))
        return self._trajectory[1]

    def _run_tp(self, state: PruningState, round_to: int) -> Trajectory:
        import time

        tp = require_torch_pruning(self.name)
        t0 = time.perf_counter()
        graph = state.graph
        model = copy.deepcopy(state.model).cpu().float().to(memory_format=torch.contiguous_format).eval()
        names = {mod: name for name, mod in model.named_modules()}
        # where each prunekit group's channels are produced: module -> [(group, {position: channel})]
        producers: dict[str, list[tuple[ChannelGroup, dict[int, int]]]] = {}
        for grp in graph.groups:
            for m in grp.members:
                if m.role in ("out", "dw") and m.param == "weight":
                    producers.setdefault(m.module, []).append(
                        (grp, dict(zip(m.positions.tolist(), m.channels.tolist(), strict=True)))
                    )
        ignored = sorted({m.module for f in graph.frozen for m in f.members if m.role in ("out", "dw")} - {""})
        alive = {name: list(range(model.get_submodule(name).weight.shape[0])) for name in producers}
        order: dict[str, list[int]] = {g.id: [] for g in graph.groups}
        done: dict[str, set[int]] = {g.id: set() for g in graph.groups}
        removed = [{g.id: 0 for g in graph.groups}]
        step_end = [0]
        with warnings.catch_warnings(), torch.enable_grad():  # TP traces with autograd
            warnings.simplefilter("ignore")
            pruner = tp.pruner.MetaPruner(
                model,
                example_input(model, self.input_size),
                importance=self.importance(tp),
                pruning_ratio=1.0,
                iterative_steps=self.iterative_steps,
                ignored_layers=[model.get_submodule(n) for n in ignored],
                round_to=round_to if round_to > 1 else None,
            )
            for _ in range(self.iterative_steps):
                for group in pruner.step(interactive=True):
                    cut: dict[str, set[int]] = {}
                    for dep, idxs in group:
                        mod = dep.target.module
                        if not isinstance(mod, nn.Module) or not pruner.DG.is_out_channel_pruning_fn(dep.handler):
                            continue
                        name = names.get(mod)
                        if name in producers:
                            cut.setdefault(name, set()).update(int(i) for i in idxs)
                        elif isinstance(mod, (nn.Conv2d, nn.Linear)) and len(idxs):
                            raise RuntimeError(
                                f"Torch-Pruning prunes the output channels of {name!r}, which no prunekit group "
                                "produces (prunekit freezes them); the two graphs disagree on this model"
                            )
                    if self._record(cut, alive, producers, order, done):
                        removed.append({gid: len(o) for gid, o in order.items()})
                    group.prune()
                step_end.append(len(removed) - 1)
        return Trajectory(order, removed, step_end, time.perf_counter() - t0)

    @staticmethod
    def _record(
        cut: dict[str, set[int]],
        alive: dict[str, list[int]],
        producers: dict[str, list[tuple[ChannelGroup, dict[int, int]]]],
        order: dict[str, list[int]],
        done: dict[str, set[int]],
    ) -> bool:
        """Translate one TP group's out-channel cuts (current indices per module) into group channels;
        True when a prunekit group lost channels."""
        per_group: dict[str, set[int]] = {}
        for name, idxs in cut.items():
            original = [alive[name][i] for i in sorted(idxs)]
            alive[name] = [c for i, c in enumerate(alive[name]) if i not in idxs]
            for grp, pos2ch in producers[name]:
                chans = {pos2ch[p] for p in original if p in pos2ch}
                if grp.id in per_group and per_group[grp.id] != chans:
                    raise RuntimeError(
                        f"Torch-Pruning removes different channels of prunekit group {grp.id!r} in its producers "
                        f"({sorted(per_group[grp.id])} vs {sorted(chans)} in {name!r}); the graphs disagree"
                    )
                per_group[grp.id] = chans
        changed = False
        for gid, chans in per_group.items():
            new = sorted(chans - done[gid])
            order[gid].extend(new)
            done[gid].update(new)
            changed = changed or bool(new)
        return changed

    # -- the Strategy interface --------------------------------------------------------------------

    def allocate(self, state: PruningState, budget: Budget) -> dict[str, int]:
        traj = self.trajectory(state, budget.round_to)
        gone = traj.removed[traj.state_at(budget.sparsity or 0.0)]
        return {g.id: max(1, g.size - gone[g.id]) for g in state.graph.groups}

    def prune(self, state: PruningState, group: ChannelGroup, keep: int) -> torch.Tensor:
        round_to = self._trajectory[0][1] if self._trajectory is not None else 1  # allocate ran first
        traj = self.trajectory(state, round_to)
        order = traj.order[group.id]
        n = group.size - int(keep)
        if n > len(order):
            raise ValueError(
                f"{self.name}: group {group.id!r} must keep {keep} of {group.size} channels, but Torch-Pruning "
                f"removed only {len(order)} of them in {self.iterative_steps} steps"
            )
        mask = torch.ones(group.size, dtype=torch.bool)
        if n > 0:
            mask[torch.tensor(order[:n], dtype=torch.long)] = False
        return mask


@pk.register_strategy("tp_magnitude")
class TPMagnitude(TorchPruningStrategy):
    """Torch-Pruning's MetaPruner with MagnitudeImportance (group Lp norm), progressive to the MACs target."""

    params = {
        **TorchPruningStrategy.params,
        "p": Param(int, 2, choices=(1, 2), help="norm of TP's MagnitudeImportance (TP default 2; 1 = TP's 'l1')"),
    }

    def importance(self, tp: Any) -> Any:
        return tp.importance.MagnitudeImportance(p=self.p)


@pk.register_strategy("tp_bnscale")
class TPBNScale(TorchPruningStrategy):
    """Torch-Pruning's MetaPruner with BNScaleImportance (|BN gamma|), progressive to the MACs target."""

    params = dict(TorchPruningStrategy.params)

    def importance(self, tp: Any) -> Any:
        return tp.importance.BNScaleImportance()


__all__ = ["TPBNScale", "TPMagnitude", "TorchPruningStrategy", "Trajectory", "require_torch_pruning"]
